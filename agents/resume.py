"""Exact resume: what a checkpoint holds beyond SB3's zip, so that a killed run continues
as if it had never stopped.

SB3's ``model.save`` keeps the weights, the optimizer, ``num_timesteps`` and the
episode-info buffer (``load(env=...)`` drops the last observation, to force a reset). An
interrupted run also needs, at the moment of the checkpoint:

* the last observation and episode-start flags;
* the env's state: which example each slot is on, how far into it, its sampler's RNG and
  the running episode returns (:meth:`lmgym.sb3.LmgymVecEnv.get_state`);
* the process's random streams: torch (dropout, action sampling), numpy (PPO's minibatch
  shuffling), Python's ``random`` and the action space's generator;
* values logged by the last ``train()`` but not yet written (SB3 writes them with the next
  rollout's row of ``progress.csv``);
* how many rows of ``progress.csv`` had been written, so a resumed run keeps those rows
  and drops the ones logged after the checkpoint by the run that was killed;
* the callbacks' own state (the KL controller's coefficient and reference policy, the
  evaluator's best score), through their ``state_dict`` / ``load_state_dict``.

:func:`capture` gathers these into a dict that :func:`agents.evaluate.save_model` stores
inside the same zip (``model.save(include=[RESUME_ATTR])``), so the checkpoint stays one
atomically replaced file; after ``load_model``, :func:`restore_env_and_callbacks` and then
:func:`restore_rng` put them back.
Checkpoints are taken between two iterations (``on_rollout_start``), where an on-policy
algorithm's state is exactly the list above: its rollout buffer is empty.

Exact for the on-policy algorithms (PPO, A2C, TRPO, MaskablePPO, REINFORCE) on CPU, with
the same library versions. DQN continues from its weights and counters but with an empty
replay buffer (SB3 does not put the buffer in the zip). On GPUs, cuDNN/cuBLAS kernels are
not bit-reproducible run to run unless ``torch.use_deterministic_algorithms(True)`` (see
docs/RELIABILITY.md), so a resumed GPU run matches an uninterrupted one only as closely as
two uninterrupted GPU runs match each other.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch as th

#: the model attribute that carries the resume state through ``save``/``load``
RESUME_ATTR = "_lmgym_resume"
FORMAT = 1


def _callback_key(callback: Any) -> str:
    return type(callback).__name__


def capture(model: Any, callbacks: list[Any] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The state of a run between two iterations, beyond what SB3 saves."""
    env = model.get_env()
    get_env_state = getattr(env, "get_state", None)
    logger = getattr(model, "_logger", None)
    return {
        "format": FORMAT,
        "num_timesteps": int(model.num_timesteps),
        "env": get_env_state() if get_env_state is not None else None,
        # SB3's load(env=...) drops _last_obs (force_reset): keep it here
        "last_obs": copy.deepcopy(model._last_obs),
        "last_episode_starts": copy.deepcopy(model._last_episode_starts),
        "rng": {
            "torch": th.get_rng_state().numpy(),
            "cuda": [s.numpy() for s in th.cuda.get_rng_state_all()]
            if th.cuda.is_initialized()
            else None,
            "numpy": np.random.get_state(),  # noqa: NPY002 - SB3 shuffles with the legacy global RNG
            "python": random.getstate(),
            "action_space": model.action_space.np_random.bit_generator.state,
        },
        "pending_log": None
        if logger is None
        else {
            "values": dict(logger.name_to_value),
            "counts": dict(logger.name_to_count),
            "excluded": dict(logger.name_to_excluded),
        },
        "csv": _csv_position(logger),
        "callbacks": {
            _callback_key(cb): cb.state_dict() for cb in callbacks if hasattr(cb, "state_dict")
        },
    }


def _csv_writer(logger: Any) -> Any:
    from stable_baselines3.common.logger import CSVOutputFormat

    formats = getattr(logger, "output_formats", []) if logger is not None else []
    return next((f for f in formats if isinstance(f, CSVOutputFormat)), None)


def _csv_position(logger: Any) -> dict[str, Any] | None:
    writer = _csv_writer(logger)
    if writer is None:
        return None
    writer.file.flush()
    with open(writer.file.name) as f:
        rows = sum(1 for _ in f)
    return {"keys": list(writer.keys), "lines": rows}


def _rewrite_csv(writer: Any, lines: list[str], keys: list[str]) -> None:
    """SB3's CSV writer opened progress.csv with "w+": put back ``lines`` and their columns."""
    writer.file.writelines(lines)
    writer.file.flush()
    writer.keys = list(keys)


def read_progress(path: Any) -> list[str] | None:
    """The lines of a run's ``progress.csv`` before a resumed run's logger truncates it."""
    try:
        with open(path) as f:
            return f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return None


def resumable(model: Any) -> str | None:
    """None if ``model`` carries a resume state that can be applied exactly, else why not
    (the text of a warning)."""
    state = getattr(model, RESUME_ATTR, None)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "the checkpoint has no resume state (not written by lmgym train)"
    if state["num_timesteps"] != model.num_timesteps:
        return (
            f"the resume state is for step {state['num_timesteps']}, the weights for "
            f"step {model.num_timesteps}"
        )
    env = model.get_env()
    if state["env"] is None or (env is not None and not hasattr(env, "set_state")):
        return "the env cannot save and restore its episodes (not an lmgym.sb3 vector env)"
    return None


def restore_env_and_callbacks(
    model: Any,
    callbacks: list[Any] = (),  # type: ignore[assignment]
    previous_csv: list[str] | None = None,
) -> None:
    """Put back the env's episodes, the pending log values, the ``progress.csv`` rows
    written before the checkpoint (``previous_csv``: :func:`read_progress` of the file,
    read before ``configure`` truncated it) and the callbacks' state.

    Call after ``model.set_logger`` and before :func:`restore_rng`. If the model has no
    usable resume state, the env is reset at the start of ``learn`` instead (a fresh set
    of episodes; the run continues, not bit-identically).
    """
    why = resumable(model)
    writer = _csv_writer(getattr(model, "_logger", None))
    if why is not None:
        model._last_obs = None  # SB3 then resets the env: obs and env state agree again
        if writer is not None and previous_csv:  # keep the whole earlier log
            _rewrite_csv(writer, previous_csv, previous_csv[0].rstrip("\n").split(","))
        return
    state = getattr(model, RESUME_ATTR)
    model.get_env().set_state(state["env"])
    model._last_obs = copy.deepcopy(state["last_obs"])
    model._last_episode_starts = copy.deepcopy(state["last_episode_starts"])
    pending = state["pending_log"]
    if pending is not None:
        logger = model.logger
        logger.name_to_value.update(pending["values"])
        logger.name_to_count.update(pending["counts"])
        logger.name_to_excluded.update(pending["excluded"])
    position = state.get("csv")
    if writer is not None and position is not None and previous_csv:
        _rewrite_csv(writer, previous_csv[: position["lines"]], position["keys"])
    saved = state["callbacks"]
    for cb in callbacks:
        if hasattr(cb, "load_state_dict") and _callback_key(cb) in saved:
            cb.load_state_dict(saved[_callback_key(cb)])


def restore_rng(model: Any) -> None:
    """Put back every random stream; call last, just before ``learn``."""
    if resumable(model) is not None:
        return
    rng = getattr(model, RESUME_ATTR)["rng"]
    th.set_rng_state(th.from_numpy(rng["torch"]))
    if rng["cuda"] is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all([th.from_numpy(s) for s in rng["cuda"]])
    np.random.set_state(rng["numpy"])  # noqa: NPY002
    random.setstate(rng["python"])
    model.action_space.np_random.bit_generator.state = rng["action_space"]

"""Save and load trained models with a JSON sidecar naming the algorithm and the env.

``save_model(model, "runs/x/model.zip", env_id=..., make_kwargs=...)`` writes the SB3 zip
and ``runs/x/model.json`` atomically (temp file + ``os.replace``: a crash never leaves a
half-written checkpoint). ``load_model("runs/x/model.zip")`` reads the sidecar to pick
the algorithm class and returns ``(model, sidecar)``; ``lmgym evaluate MODEL`` uses both
(``sidecar["env_id"]``, ``sidecar["make_kwargs"]``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from lmgym.data.cache import atomic_write
from lmgym.provenance import git_commit


def algorithms() -> dict[str, type[BaseAlgorithm]]:
    """Algorithm name (as in ``--algo`` and the sidecar) -> class."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import A2C, PPO

    from agents.dqn import DQN
    from agents.reinforce import REINFORCE
    from agents.trpo import TRPO

    return {
        "ppo": PPO,
        "a2c": A2C,
        "trpo": TRPO,
        "maskable_ppo": MaskablePPO,
        "dqn": DQN,
        "reinforce": REINFORCE,
    }


def algo_name(model: BaseAlgorithm) -> str:
    """The registry name of ``model``'s class (falls back to the lower-cased class name)."""
    for name, cls in algorithms().items():
        if type(model) is cls:
            return name
    return type(model).__name__.lower()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.zip`` -> ``model.json``."""
    path = Path(path)
    return (
        path.with_suffix(".json") if path.suffix == ".zip" else path.with_name(path.name + ".json")
    )


def zip_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return repr(value)


def save_model(
    model: BaseAlgorithm,
    path: str | os.PathLike,
    env_id: str | None = None,
    make_kwargs: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Atomically write ``model`` to ``path`` (``.zip``) and its sidecar JSON.

    :param model: any SB3 model.
    :param path: destination (``.zip`` appended if missing).
    :param env_id: the env it was trained on (read by ``lmgym evaluate``).
    :param make_kwargs: ``gym.make`` kwargs of that env.
    :param extra: more JSON-able facts for the sidecar (seed, run name, timesteps...).
    :return: the zip's path.
    """
    from agents.resume import RESUME_ATTR

    target = zip_path(path)
    meta = {
        "algo": algo_name(model),
        "env_id": env_id,
        "make_kwargs": _jsonable(make_kwargs or {}),
        "policy": type(model.policy).__name__,
        "policy_kwargs": _jsonable(getattr(model, "policy_kwargs", {})),
        "num_timesteps": int(model.num_timesteps),
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        **_jsonable(extra),
    }
    data = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    # Sidecar first: a process killed between the two writes leaves a zip that still has
    # a sidecar naming its algorithm (the zip's own num_timesteps is the authority).
    atomic_write(sidecar_path(target), lambda f: f.write(data))
    include = [RESUME_ATTR] if hasattr(model, RESUME_ATTR) else None
    atomic_write(target, lambda f: model.save(f, include=include))
    return target


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a saved model (``{}`` if there is none)."""
    side = sidecar_path(zip_path(path))
    if not side.is_file():
        return {}
    return json.loads(side.read_text())


def copy_encoder(model: BaseAlgorithm, path: str | os.PathLike) -> dict[str, int]:
    """Copy the encoder of the model saved at ``path`` into ``model`` (transfer, warm start
    from another task or a multi-task run). Every ``*features_extractor.*`` parameter is
    copied; the heads and the critic keep their fresh initialisation.

    :param model: the model to start (its policy's encoder is overwritten in place).
    :param path: a model saved by :func:`save_model`, of any env with the same tokenizer.
    :return: ``{"copied": n tensors, "kept": m tensors}``.
    :raises ValueError: when the encoders differ (another backbone or vocabulary), naming
        the first mismatching tensor.
    """
    import torch as th

    source, meta = load_model(path, device="cpu")
    theirs = source.policy.state_dict()
    ours = model.policy.state_dict()
    wanted = [k for k in ours if "features_extractor." in k]  # pi_/vf_/q_net.features_...
    for key in wanted:
        if key not in theirs or theirs[key].shape != ours[key].shape:
            found = tuple(theirs[key].shape) if key in theirs else "absent"
            raise ValueError(
                f"--init-from {path}: encoder tensor {key} is {found} there and "
                f"{tuple(ours[key].shape)} here; both runs need the same backbone and tokenizer "
                f"(the saved run used make_kwargs {meta.get('make_kwargs')})"
            )
    with th.no_grad():
        for key in wanted:
            ours[key].copy_(theirs[key].to(ours[key].device))
    return {"copied": len(wanted), "kept": len(ours) - len(wanted)}


def load_model(
    path: str | os.PathLike,
    env: Any = None,
    device: str = "auto",
    algo: str | None = None,
    **load_kwargs: Any,
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load a model saved by :func:`save_model` (or any SB3 zip, given ``algo``).

    :param path: the ``.zip`` (with or without the suffix).
    :param env: optional env to attach (needed to continue training).
    :param device: torch device.
    :param algo: algorithm name, overriding the sidecar's (``ppo``, ``a2c``, ``trpo``,
        ``maskable_ppo``, ``dqn``, ``reinforce``).
    :param load_kwargs: passed to ``Algo.load`` (``custom_objects``...).
    :return: ``(model, sidecar dict)``.
    """
    target = zip_path(path)
    if not target.is_file():
        raise FileNotFoundError(f"no saved model at {target}")
    meta = read_sidecar(target)
    name = algo or meta.get("algo")
    registry = algorithms()
    if name not in registry:
        raise ValueError(
            f"cannot tell which algorithm saved {target} (sidecar {sidecar_path(target)} "
            f"{'missing' if not meta else 'says ' + repr(name)}): pass algo= one of {sorted(registry)}"
        )
    model = registry[name].load(target, env=env, device=device, **load_kwargs)
    return model, meta

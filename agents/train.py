"""Train a transformer policy on a lmgym env: ``python -m agents.train ENV_ID [options]``.

Also ``lmgym train ENV_ID ...`` (the CLI delegates to :func:`main`). Reads top to bottom:
``Args`` (every field is a flag, ``--help`` shows the help strings), hyperparameters
(rl-zoo style YAML ``agents/hyperparams/<algo>.yml``: the ``default`` entry, then the
env's entry, then the entry's ``backbone_overrides[<backbone>]``, then ``--hp KEY=VALUE``),
env + model setup (optionally behaviour-cloned first), callbacks (evaluation, checkpoints,
KL control), ``learn``, save.

Example::

    python -m agents.train lmgym/SST2-v0 --algo ppo --backbone minilm --total-timesteps 20000 \\
        --seed 1 --n-envs 8 --eval-freq 5000 --log-dir runs/

Run names are ``<env>__<algo>__<seed>__<unix time>`` (``/`` in the env id becomes ``-``);
each run writes ``<log-dir>/<run name>/``: ``progress.csv`` (+ TensorBoard events when
``tensorboard`` is installed), ``model.zip`` + ``model.json`` (written atomically at every
checkpoint and at the end), ``best_model.zip`` (best evaluation), ``args.json``.
``--resume --save-path runs/<run>/model.zip`` continues a run (timesteps keep counting;
DQN's replay buffer is not saved and starts empty).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
ALGOS = ("ppo", "a2c", "trpo", "maskable_ppo", "dqn", "reinforce")
#: keys of a hyperparameter entry that are not algorithm constructor arguments
SETUP_KEYS = ("n_envs", "total_timesteps", "policy", "backbone", "env_kwargs", "policy_kwargs",
              "pretrain_steps", "pretrain_lr", "pretrain_batch_size", "pretrain_epochs", "kl_coef",
              "kl_target", "kl_horizon", "anchor_coef", "backbone_overrides", "minibatch", "advantages",
              "reward_overrides", "sil_coef", "sil_capacity", "sil_min_return")  # fmt: skip


def arg(help: str, default: Any = None, **kwargs: Any) -> Any:
    """A field of :class:`Args`: its ``--help`` text and default (``default_factory=`` and
    ``positional=True`` also work)."""
    positional = {"positional": True} if kwargs.pop("positional", False) else {}
    if "default_factory" not in kwargs and not positional:
        kwargs["default"] = default
    return field(metadata={"help": help, **positional}, **kwargs)


@dataclass
class Args:
    """Command-line arguments (``--help`` shows each field's help)."""

    env_id: str = arg("env id, e.g. lmgym/SST2-v0", positional=True)
    algo: str = arg(f"one of {', '.join(ALGOS)}", "ppo")
    backbone: str | None = arg("tiny | minilm | a from_pretrained folder (default: the YAML's)")
    total_timesteps: int | None = arg("env steps to train (default: the YAML's)")
    seed: int = arg("random seed (envs, torch, numpy)", 0)
    device: str = arg("cpu | cuda | auto", "auto")
    n_envs: int | None = arg("parallel envs (default: the YAML's)")
    eval_freq: int = arg(
        "evaluate every N env steps on the validation split (0 = only at the end, -1 = never)", 0
    )
    eval_max_examples: int | None = arg("validation examples per evaluation (None = all)", 500)
    checkpoint_freq: int = arg("save model.zip every N env steps (0 = only at the end)", 0)
    log_interval: int | None = arg(
        "write a progress.csv row every N iterations (default: the algorithm's)"
    )
    log_dir: str = arg("folder holding one sub-folder per run", "runs")
    run_name: str | None = arg("run folder name (default env__algo__seed__time)")
    save_path: str | None = arg("model zip (default <log-dir>/<run>/model.zip)")
    resume: bool = arg("continue from --save-path instead of starting fresh", False)
    hyperparams: str | None = arg("YAML file to read instead of agents/hyperparams/<algo>.yml")
    hp: list[str] = arg(
        "override a hyperparameter: KEY=VALUE (YAML value), repeatable", default_factory=list
    )
    env_kwarg: list[str] = arg(
        "gym.make kwarg KEY=VALUE (YAML value), repeatable", default_factory=list
    )
    data_dir: str | None = arg("data folder passed to gym.make (or 'sample')")
    pretrain_steps: int | None = arg(
        "behaviour-cloning steps before RL (default: the YAML's, else 0)"
    )
    warm_start: int | None = arg(
        "supervised warm start on N labelled env steps before RL (the leaderboard's "
        "supervised recipe: the YAML's pretrain_lr, pretrain_batch_size and pretrain_epochs, "
        "each defaulting to the algorithm's own); the warm start is evaluated at step 0, so "
        "best_model.zip is never worse on validation"
    )
    init_from: str | None = arg(
        "start from the encoder of a saved model (a multi-task run, another task): its "
        "*features_extractor.* weights are copied, heads and critic start fresh"
    )
    kl_coef: float | None = arg("KL penalty toward the starting policy (0 = off)")
    kl_target: float | None = arg(
        "adapt the KL coefficient toward this per-step KL (Ziegler et al.)"
    )
    anchor_coef: float | None = arg(
        "weight of the warm start's behaviour-cloning loss, on its own labelled data, mixed "
        "into every RL step (InstructGPT's PPO-ptx; needs --warm-start; 0 = off)"
    )
    sil_coef: float | None = arg(
        "weight of self-imitation (Oh et al., 2018): replay the agent's own transitions whose "
        "return beat the critic's estimate, -log pi(a|s), in every RL step (0 = off; "
        "agents/self_imitation.py)"
    )
    dtype: str | None = arg("bf16 | fp16 autocast of the encoder (GPU)")
    compile: bool = arg("torch.compile the encoder (GPU)", False)
    threads: int | None = arg("torch CPU threads")
    progress_bar: bool | None = arg("show a progress bar (default: when stdout is a terminal)")
    verbose: int = arg("0 quiet, 1 SB3 logs to stdout", 1)


def _flag_type(annotation: Any) -> Any:
    """The type a flag parses: ``X`` of ``X | None``, else the annotation itself."""
    members = typing.get_args(annotation)
    if type(None) in members and len(members) == 2:
        return next(m for m in members if m is not type(None))
    return annotation


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser generated from the typed fields of :class:`Args`.

    ``bool`` fields become ``--flag/--no-flag``, ``list[str]`` fields repeatable
    ``--flag KEY=VALUE``, every other field ``--flag VALUE`` parsed by its type.
    """
    parser = argparse.ArgumentParser(prog="agents.train", description=__doc__.splitlines()[0])
    hints = typing.get_type_hints(Args)
    for f in dataclasses.fields(Args):
        help_text, kind = f.metadata.get("help", ""), _flag_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=help_text)  # fmt: skip
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, dest=f.name, action="append", default=[],
                                metavar="KEY=VALUE", help=help_text)  # fmt: skip
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default,
                                help=f"{help_text} (default: {f.default})")  # fmt: skip
    return parser


def parse_args(argv: list[str] | None = None) -> Args:
    ns = build_parser().parse_args(argv)
    args = Args(**vars(ns))
    if args.algo not in ALGOS:
        raise SystemExit(f"--algo {args.algo!r}: choose one of {', '.join(ALGOS)}")
    return args


# -- hyperparameters ---------------------------------------------------------------------
#: what YAML 1.1 reads as a string but anyone typing it means as a number (``1e-3``, ``5E4``)
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_value(text: str) -> Any:
    """A flag's value as YAML, with exponent numbers without a dot read as numbers."""
    import yaml

    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _EXPONENT.fullmatch(value) else value


def _key_values(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"{what} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = _yaml_value(value)
    return out


def load_hyperparams(
    algo: str, env_id: str, backbone: str | None = None, path: str | None = None
) -> dict[str, Any]:
    """The merged hyperparameter entry of ``env_id`` for ``algo``.

    :param algo: algorithm name (file ``agents/hyperparams/<algo>.yml``).
    :param env_id: entry key; ``default`` is applied first, then every entry whose key is a
        glob pattern matching ``env_id`` (``lmgym/*``), then this entry if present.
    :param backbone: applies ``backbone_overrides[backbone]`` of the merged entry (its dict
        values, such as ``env_kwargs``, merge into the entry's rather than replace them; an
        env's ``backbone_overrides`` add to ``default``'s per backbone).
    :param path: read this YAML file instead.
    """
    import yaml

    file = Path(path) if path else HYPERPARAMS_DIR / f"{algo}.yml"
    table = yaml.safe_load(file.read_text()) or {}
    entry: dict[str, Any] = {}

    def merge(layer: dict[str, Any]) -> None:  # dict values (env_kwargs...) merge one level
        for name, value in layer.items():
            if name == "backbone_overrides":  # an env's override adds to default's, per backbone
                old = entry.get(name) or {}
                entry[name] = {b: {**old.get(b, {}), **value.get(b, {})} for b in {*old, *value}}
            elif isinstance(value, dict) and isinstance(entry.get(name), dict):
                entry[name] = {**entry[name], **value}
            else:
                entry[name] = value

    patterns = sorted(k for k in table if "*" in k and k != env_id and fnmatch(env_id, k))
    for key in ("default", *patterns, env_id):
        merge(table.get(key) or {})
    backbone = backbone or entry.get("backbone", "tiny")
    merge((entry.pop("backbone_overrides", None) or {}).get(backbone, {}))
    entry["backbone"] = backbone
    return entry


# -- setup -------------------------------------------------------------------------------
def supervised_recipe(env: str, backbone: str) -> dict[str, Any]:
    """The learning rate, minibatch size and epochs of behaviour cloning for ``backbone`` on
    ``env``: ppo.yml's ``pretrain_lr`` / ``pretrain_batch_size`` / ``pretrain_epochs`` where
    it sets them (what ``--warm-start`` uses), else PPO's own. The supervised baseline (the
    leaderboard's, the demo's) is a warm start of the whole budget."""
    hp = load_hyperparams("ppo", env, backbone)
    return {
        "lr": float(hp.get("pretrain_lr", hp["learning_rate"])),
        "batch_size": int(hp.get("pretrain_batch_size", hp["batch_size"])),
        "epochs": int(hp.get("pretrain_epochs", hp["n_epochs"])),
    }


def run_name(env_id: str, algo: str, seed: int, when: float | None = None) -> str:
    """``<env>__<algo>__<seed>__<unix time>`` with ``/`` in the env id replaced by ``-``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in env_id)
    return f"{safe}__{algo}__{seed}__{int(when if when is not None else time.time())}"


def _register_envs(env_id: str) -> None:
    """Register the lmgym ids and check that ``env_id`` is registered.

    Any registered Gymnasium id trains: register your own env (``gym.register``, e.g. in
    the module that defines it) before calling :func:`main`.

    :param env_id: the id to train on.
    """
    import gymnasium as gym

    try:
        import lmgym  # noqa: F401  (registers lmgym/*)
    except ImportError:
        pass
    if env_id not in gym.registry:
        raise SystemExit(
            f"env id {env_id!r} is not registered: pick one of `lmgym list`, or call "
            "gym.register for your own env before agents.train.main"
        )


def make_env(env_id: str, n_envs: int, seed: int, make_kwargs: dict[str, Any]) -> Any:
    """An SB3 ``VecEnv`` of ``n_envs`` episodes of ``env_id``.

    lmgym ids with a native vector env use ``lmgym.sb3.make_vec_env`` (one batched step
    for all envs); anything else a ``DummyVecEnv`` of ``Monitor``-wrapped envs (not SB3's
    ``make_vec_env``: it forces ``render_mode="rgb_array"``, which text envs reject).
    """
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if gym.spec(env_id).vector_entry_point is not None:
        try:
            import lmgym.sb3
        except ImportError:
            pass
        else:
            return lmgym.sb3.make_vec_env(env_id, n_envs=n_envs, seed=seed, **make_kwargs)

    def factory(rank: int) -> Any:
        def make() -> gym.Env:
            env = Monitor(gym.make(env_id, **make_kwargs))
            env.action_space.seed(seed + rank)
            return env

        return make

    venv = DummyVecEnv([factory(i) for i in range(n_envs)])
    venv.seed(seed)
    return venv


def default_policy(algo: str) -> str:
    return {"dqn": "TransformerQPolicy", "maskable_ppo": "MaskableTransformerPolicy"}.get(
        algo, "TransformerPolicy"
    )


def policy_class(name: str) -> type:
    import agents

    if not hasattr(agents, name):
        raise SystemExit(
            f"policy {name!r} is not in agents (TransformerPolicy, MaskableTransformerPolicy, TransformerQPolicy)"
        )
    return getattr(agents, name)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def check_tokenizer(venv: Any, backbone: str) -> str | None:
    """A warning when the env's tokenizer is not the pretrained backbone's (ids would mean other words)."""
    if backbone == "tiny":
        return None
    from agents.backbones import MINILM_HINT, backbone_tokenizer

    try:
        expected = backbone_tokenizer(backbone)
        actual = venv.get_attr("tokenizer", indices=[0])[0]
    except Exception:  # noqa: BLE001 - only a courtesy check
        return None
    if expected is None or actual is None or not hasattr(actual, "get_vocab_size"):
        return None
    if actual.get_vocab_size() != expected.get_vocab_size() or actual.token_to_id(
        "[CLS]"
    ) != expected.token_to_id("[CLS]"):
        return (
            f"the env's tokenizer ({actual.get_vocab_size()} ids) is not backbone {backbone!r}'s "
            f"({expected.get_vocab_size()}): token ids will not mean what the pretrained model learned; {MINILM_HINT}"
        )
    return None


def primary_score(result: dict[str, Any]) -> float | None:
    """The number that decides the best checkpoint: the first family metric
    (:data:`lmgym.envs.core.FAMILY_METRIC`, in its order) that ``result`` holds, else its
    ``mean_reward`` (SB3's ``evaluate_policy`` fallback), else ``None``."""
    from lmgym.envs.core import FAMILY_METRIC

    for metric in (*dict.fromkeys(FAMILY_METRIC.values()), "mean_reward"):
        if metric in result:
            return float(result[metric])
    return None


# -- callbacks ---------------------------------------------------------------------------
def _eval_callback_class() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    class LmgymEvalCallback(BaseCallback):
        """Evaluate on the validation split every ``eval_freq`` env steps; keep the best model.

        Uses ``lmgym.evaluate`` (corpus metrics) when it can run the env, otherwise SB3's
        ``evaluate_policy`` (mean episode reward) on a fresh env. Like SB3's ``EvalCallback``
        it runs inside the rollout, so an on-policy algorithm's last update comes after the
        last in-rollout evaluation: :meth:`stale` says so, and ``main`` evaluates once more.
        """

        def __init__(
            self, evaluate: Any, eval_freq: int, best_path: Path | None, save: Any, verbose: int = 0
        ) -> None:
            super().__init__(verbose)
            self.evaluate, self.eval_freq, self.best_path, self.save = (
                evaluate,
                eval_freq,
                best_path,
                save,
            )
            self.best: float = -np.inf
            self.last_eval_step = 0
            self.last_eval_updates: int | None = None  # the model's _n_updates then
            self.results: list[dict[str, Any]] = []

        def state_dict(self) -> dict[str, Any]:
            return {"best": self.best, "last_eval_step": self.last_eval_step,
                    "last_eval_updates": self.last_eval_updates}  # fmt: skip

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.best, self.last_eval_step = state["best"], state["last_eval_step"]
            self.last_eval_updates = state.get("last_eval_updates")

        def stale(self) -> bool:
            """Whether the model took env steps or updates since the last evaluation."""
            return (
                self.last_eval_step != self.model.num_timesteps
                or self.last_eval_updates != getattr(self.model, "_n_updates", None)
            )

        def _on_step(self) -> bool:
            if self.eval_freq > 0 and self.num_timesteps - self.last_eval_step >= self.eval_freq:
                self.run()
            return True

        def run(self) -> dict[str, Any]:
            self.last_eval_step = self.num_timesteps
            self.last_eval_updates = getattr(self.model, "_n_updates", None)
            result = self.evaluate(self.model)
            result["timesteps"] = self.num_timesteps
            self.results.append(result)
            for key, value in result.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and key != "timesteps"
                ):
                    self.logger.record(f"eval/{key}", float(value))
            score = primary_score(result)
            if score is not None and score > self.best:
                self.best = score
                if self.best_path is not None:
                    self.save(self.best_path)
            self.logger.dump(self.num_timesteps)
            return result

    return LmgymEvalCallback


def make_evaluator(
    env_id: str, make_kwargs: dict[str, Any], max_examples: int | None, seed: int
) -> Any:
    """``model -> metrics dict`` on the validation split."""

    def evaluate(model: Any) -> dict[str, Any]:
        if env_id.startswith("lmgym/"):
            try:
                import lmgym

                kwargs = {k: v for k, v in make_kwargs.items() if k != "split"}
                return dict(
                    lmgym.evaluate(
                        model, env_id, split="validation", max_examples=max_examples, **kwargs
                    )
                )
            except (ImportError, AttributeError, NotImplementedError, ValueError) as err:
                print(
                    f"lmgym.evaluate unavailable ({err}); falling back to mean reward",
                    file=sys.stderr,
                )
        import gymnasium as gym
        from stable_baselines3.common.evaluation import evaluate_policy

        kwargs = dict(make_kwargs)
        if env_id.startswith("lmgym/"):
            kwargs["split"] = "validation"
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(gym.make(env_id, **kwargs))
        env.reset(seed=seed + 10_000)
        mean, std = evaluate_policy(
            model, env, n_eval_episodes=min(max_examples or 100, 100), deterministic=True
        )
        return {"mean_reward": float(mean), "std_reward": float(std)}

    return evaluate


def _checkpoint_callback_class() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckpointCallback(BaseCallback):
        """Write the model (atomically, with its sidecar and resume state) at the first
        iteration boundary after every ``freq`` env steps."""

        def __init__(self, freq: int, save: Any, path: Path) -> None:
            super().__init__(0)
            self.freq, self.save, self.path, self.last = freq, save, path, 0

        def _on_training_start(self) -> None:
            self.last = self.num_timesteps

        def _on_rollout_start(self) -> None:
            # between two iterations: the rollout buffer is empty, so the run's whole state
            # is the model, the env and the RNGs, which the checkpoint holds (agents.resume)
            if self.freq > 0 and self.num_timesteps - self.last >= self.freq:
                self.last = self.num_timesteps
                self.save(self.path, resume_state=True)

        def _on_step(self) -> bool:
            return True

    return CheckpointCallback


# -- setup from hyperparameters ------------------------------------------------------------
@dataclass
class Plan:
    """What the hyperparameters resolve to: the run's settings beyond :class:`Args`."""

    algo_kwargs: dict[str, Any]  # algorithm constructor arguments (the rest of the entry)
    backbone: str
    n_envs: int
    total_timesteps: int
    make_kwargs: dict[str, Any]  # gym.make kwargs
    policy: str
    policy_kwargs: dict[str, Any]  # the YAML's; :func:`full_policy_kwargs` adds the env's
    pretrain_steps: int
    pretrain_lr: float
    warm_start_lr: float | None  # None: the algorithm's own learning rate
    warm_start_batch_size: int | None  # None: the algorithm's own minibatch
    warm_start_epochs: int | None  # None: the algorithm's own epochs
    kl_coef: float
    kl_target: float | None
    kl_horizon: int
    anchor_coef: float = 0.0
    sil_coef: float = 0.0
    sil_capacity: int = 50_000
    sil_min_return: float | None = None


def resolve_hyperparams(args: Args) -> Plan:
    """YAML default <- env entry <- backbone override <- ``--hp``, split into the run's
    settings and the algorithm's constructor arguments; flags win over the YAML."""
    from agents.buffers import apply_buffer_options

    hp = load_hyperparams(args.algo, args.env_id, args.backbone, args.hyperparams)
    cli_hp = _key_values(args.hp, "--hp")
    hp.update(cli_hp)
    backbone = hp.pop("backbone")
    n_envs = int(args.n_envs or hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    total_timesteps = int(  # 0 is a valid budget: a --warm-start saved before any RL
        hp.pop("total_timesteps", 10_000) if args.total_timesteps is None else args.total_timesteps
    )
    hp.pop("total_timesteps", None)
    make_kwargs = {
        **(hp.pop("env_kwargs", None) or {}),
        **_key_values(args.env_kwarg, "--env-kwarg"),
    }
    if args.data_dir:
        make_kwargs["data_dir"] = args.data_dir
    # the reward decides the discount: NER's per-tag rewards are bandits (gamma 0), its
    # entity-F1 reward arrives when an entity closes, after the tags that earned it
    reward = (hp.pop("reward_overrides", None) or {}).get(make_kwargs.get("reward_mode"), {})
    hp.update({key: value for key, value in reward.items() if key not in cli_hp})
    policy_kwargs = dict(hp.pop("policy_kwargs", None) or {})
    policy_name = hp.pop("policy", None) or default_policy(args.algo)
    pretrain_steps = int(
        args.pretrain_steps if args.pretrain_steps is not None else hp.pop("pretrain_steps", 0)
    )
    warm_start_lr = hp.get("pretrain_lr")  # --warm-start: default the algorithm's own lr
    pretrain_lr = float(hp.pop("pretrain_lr", 1e-4))
    warm_start_batch_size = hp.pop("pretrain_batch_size", None)  # default the algorithm's
    warm_start_epochs = hp.pop("pretrain_epochs", None)
    kl_coef = float(args.kl_coef if args.kl_coef is not None else hp.pop("kl_coef", 0.0))
    kl_target = args.kl_target if args.kl_target is not None else hp.pop("kl_target", None)
    kl_horizon = int(hp.pop("kl_horizon", 10_000))
    anchor_coef = float(
        args.anchor_coef if args.anchor_coef is not None else hp.pop("anchor_coef", 0.0)
    )
    sil_coef = float(args.sil_coef if args.sil_coef is not None else hp.pop("sil_coef", 0.0))
    sil_capacity = int(hp.pop("sil_capacity", 50_000))
    sil_min_return = hp.pop("sil_min_return", None)
    apply_buffer_options(hp, args.algo)
    for key in SETUP_KEYS:
        hp.pop(key, None)
    return Plan(hp, backbone, n_envs, total_timesteps, make_kwargs, policy_name, policy_kwargs,
                pretrain_steps, pretrain_lr, warm_start_lr,
                None if warm_start_batch_size is None else int(warm_start_batch_size),
                None if warm_start_epochs is None else int(warm_start_epochs),
                kl_coef, kl_target, kl_horizon, anchor_coef, sil_coef, sil_capacity,
                None if sil_min_return is None else float(sil_min_return))  # fmt: skip


def run_paths(args: Args) -> tuple[str, Path, Path]:
    """``(run name, run folder, model path)``; the folder is created. A resumed run keeps
    the name of the folder its ``--save-path`` lies in."""
    name = args.run_name or (
        Path(args.save_path).parent.name
        if args.resume and args.save_path
        else run_name(args.env_id, args.algo, args.seed)
    )
    run_dir = Path(args.log_dir) / name
    save_path = Path(args.save_path) if args.save_path else run_dir / "model.zip"
    run_dir.mkdir(parents=True, exist_ok=True)
    return name, run_dir, save_path


def full_policy_kwargs(args: Args, plan: Plan, venv: Any) -> dict[str, Any]:
    """The policy's kwargs: backbone, what the env implies, the YAML's, then the GPU flags."""
    from agents.policies import env_policy_kwargs

    policy_kwargs = {"backbone": plan.backbone, **env_policy_kwargs(venv), **plan.policy_kwargs}
    if args.algo == "trpo":
        policy_kwargs.setdefault("attention_backend", "math")
    if args.dtype:
        policy_kwargs["dtype"] = args.dtype
    if args.compile:
        policy_kwargs["compile"] = True
    return policy_kwargs


def build_model(
    args: Args, plan: Plan, policy_kwargs: dict[str, Any], venv: Any, run_dir: Path, save_path: Path
) -> tuple[Any, list[str] | None]:
    """A fresh model, or with ``--resume`` the saved one (plus the run's previous
    ``progress.csv`` lines), logging to ``run_dir`` (stdout, csv, TensorBoard if installed)."""
    from stable_baselines3.common.logger import configure

    from agents import resume
    from agents.evaluate import algorithms, load_model

    algo_cls = algorithms()[args.algo]
    previous_csv = None
    if args.resume:
        if not Path(save_path).is_file():
            raise SystemExit(f"--resume: no model at {save_path}")
        model, _ = load_model(save_path, env=venv, device=args.device)
        previous_csv = resume.read_progress(run_dir / "progress.csv")
        why = resume.resumable(model)
        if why:
            print(
                f"warning: {why}; continuing from the weights with fresh episodes "
                "(not identical to an uninterrupted run)",
                file=sys.stderr,
            )
    else:
        model = algo_cls(
            policy_class(plan.policy), venv, seed=args.seed, device=args.device, verbose=0,
            policy_kwargs=policy_kwargs, **plan.algo_kwargs,
        )  # fmt: skip
        if args.init_from:
            from agents.evaluate import copy_encoder

            copy_encoder(model, args.init_from)
    formats = (
        (["stdout"] if args.verbose else [])
        + ["csv"]
        + (["tensorboard"] if _tensorboard_available() else [])
    )
    model.set_logger(configure(str(run_dir), formats))
    return model, previous_csv


def make_saver(
    model: Any, callbacks: list[Any], args: Args, plan: Plan, name: str
) -> Callable[..., None]:
    """``save(path, resume_state=False)``: the model zip + sidecar; with ``resume_state``
    also the env episodes, RNGs and ``callbacks``' state (:mod:`agents.resume`)."""
    from agents import resume
    from agents.evaluate import save_model

    facts = {"run_name": name, "seed": args.seed, "backbone": plan.backbone,
             "hyperparams": plan.algo_kwargs}  # fmt: skip

    def save(path: Path, resume_state: bool = False) -> None:
        if resume_state:
            setattr(model, resume.RESUME_ATTR, resume.capture(model, callbacks))
        elif hasattr(model, resume.RESUME_ATTR):
            delattr(model, resume.RESUME_ATTR)
        save_model(model, path, env_id=args.env_id, make_kwargs=plan.make_kwargs, **facts)

    return save


def write_args_json(run_dir: Path, args: Args, plan: Plan, policy_kwargs: dict[str, Any]) -> None:
    """``args.json``: the flags and what they resolved to."""
    (run_dir / "args.json").write_text(json.dumps({**dataclasses.asdict(args), "resolved": {
        "n_envs": plan.n_envs, "total_timesteps": plan.total_timesteps,
        "make_kwargs": plan.make_kwargs, "policy": plan.policy, "policy_kwargs": policy_kwargs,
        "algo_kwargs": plan.algo_kwargs,
    }}, indent=2, default=repr) + "\n")  # fmt: skip


def warm_start_schedule(model: Any, args: Args, plan: Plan) -> tuple[int, int, int]:
    """``(steps, batch_size, epochs)`` of ``--warm-start``: ``steps * batch_size`` labelled
    env steps (``N`` rounded up to whole minibatches)."""
    batch = plan.warm_start_batch_size or int(getattr(model, "batch_size", None) or 64)
    epochs = plan.warm_start_epochs or int(getattr(model, "n_epochs", 1) or 1)
    return max(1, -(-int(args.warm_start or 0) // batch)), batch, epochs


def warm_start(model: Any, args: Args, plan: Plan) -> None:
    """Before RL (not on ``--resume``): ``--warm-start`` (the supervised recipe: the YAML's
    ``pretrain_lr`` / ``pretrain_batch_size`` / ``pretrain_epochs``, each defaulting to the
    algorithm's own) or ``--pretrain-steps`` of behaviour cloning; their statistics are
    logged at step 0."""
    from agents.pretrain import pretrain

    if args.resume:
        return
    if args.warm_start:
        steps, batch, epochs = warm_start_schedule(model, args, plan)
        lr = plan.warm_start_lr
        if lr is None:
            lr = model.learning_rate(1.0) if callable(model.learning_rate) else model.learning_rate
        stats = pretrain(
            model, args.env_id, steps=steps, batch_size=batch, lr=float(lr), epochs=epochs,
            seed=args.seed, **plan.make_kwargs,
        )  # fmt: skip
        for key in ("initial_accuracy", "final_accuracy", "final_loss", "samples", "updates"):
            model.logger.record(f"warm_start/{key}", float(stats[key]))
        model.logger.dump(0)
    elif plan.pretrain_steps > 0:
        stats = pretrain(model, args.env_id, steps=plan.pretrain_steps, lr=plan.pretrain_lr,
                         seed=args.seed, **plan.make_kwargs)  # fmt: skip
        for key in ("initial_accuracy", "final_accuracy", "final_loss"):
            model.logger.record(f"pretrain/{key}", stats[key])
        model.logger.dump(0)


def anchor_callback(model: Any, args: Args, plan: Plan) -> Any:
    """``--anchor-coef``: the warm start's demonstrations (collected again, same seed and
    size, so no new labels) mixed into every RL step (:mod:`agents.anchor`)."""
    from agents.anchor import SupervisedAnchorCallback
    from agents.pretrain import demonstrations

    if not args.warm_start:
        raise SystemExit(
            "--anchor-coef replays the warm start's labelled data: pass --warm-start N"
        )
    if not hasattr(model, "rollout_buffer") or args.algo == "trpo":
        raise SystemExit("--anchor-coef needs ppo, a2c, maskable_ppo or reinforce")
    steps, batch, _ = warm_start_schedule(model, args, plan)
    demos = demonstrations(args.env_id, steps * batch, seed=args.seed, **plan.make_kwargs)
    return SupervisedAnchorCallback(demos, plan.anchor_coef, batch_size=batch, seed=args.seed)


def build_callbacks(
    args: Args, plan: Plan, model: Any, run_dir: Path, save: Callable[..., None], save_path: Path
) -> tuple[list[Any], Any]:
    """``(callbacks, evaluator)``: KL control, per-task logging (MultiTask), evaluation
    (``evaluator``; ``None`` with ``--eval-freq -1``) and checkpoints, as the flags ask."""
    from agents.kl import KLPenaltyCallback
    from agents.multitask import PerTaskLogger
    from agents.policies import env_policy_kwargs

    callbacks: list[Any] = []
    if plan.kl_coef > 0:
        if not hasattr(model, "rollout_buffer"):
            raise SystemExit(
                "--kl-coef needs an on-policy algorithm (ppo, a2c, trpo, maskable_ppo, reinforce)"
            )
        callbacks.append(
            KLPenaltyCallback(coef=plan.kl_coef, target_kl=plan.kl_target, horizon=plan.kl_horizon)
        )
    if plan.anchor_coef > 0:
        callbacks.append(anchor_callback(model, args, plan))
    if plan.sil_coef > 0:
        from agents.self_imitation import SelfImitationCallback

        if not hasattr(model, "rollout_buffer") or args.algo == "trpo":
            raise SystemExit("--sil-coef needs ppo, a2c, maskable_ppo or reinforce")
        callbacks.append(
            SelfImitationCallback(
                plan.sil_coef,
                capacity=plan.sil_capacity,
                seed=args.seed,
                min_return=plan.sil_min_return,
            )
        )
    if env_policy_kwargs(model.get_env()).get("family") == "multitask":  # the env says so
        callbacks.append(PerTaskLogger())
    evaluator = None
    if args.eval_freq >= 0:
        evaluate = make_evaluator(args.env_id, plan.make_kwargs, args.eval_max_examples, args.seed)
        evaluator = _eval_callback_class()(
            evaluate, args.eval_freq, run_dir / "best_model.zip", save
        )
        callbacks.append(evaluator)
    if args.checkpoint_freq > 0:
        callbacks.append(_checkpoint_callback_class()(args.checkpoint_freq, save, save_path))
    return callbacks, evaluator


def _progress_bar(wanted: bool | None) -> bool:
    """``--progress-bar`` (default: stdout is a terminal), if rich and tqdm are installed."""
    progress = wanted if wanted is not None else sys.stdout.isatty()
    if progress:
        try:
            import rich  # noqa: F401
            import tqdm  # noqa: F401
        except ImportError:
            return False
    return progress


def learn(
    model: Any, args: Args, plan: Plan, callbacks: list[Any], previous_csv: Any, name: str
) -> None:
    """``model.learn`` up to ``total_timesteps``; a resumed run first gets back its env
    episodes, callbacks' state and RNGs, and counts on from its saved timesteps."""
    from stable_baselines3.common.callbacks import CallbackList

    from agents import resume

    progress = _progress_bar(args.progress_bar)
    if args.resume:
        resume.restore_env_and_callbacks(model, callbacks, previous_csv)
        resume.restore_rng(model)  # last: nothing may draw random numbers before learn
    remaining = plan.total_timesteps - (model.num_timesteps if args.resume else 0)
    if remaining > 0:
        interval = {"log_interval": args.log_interval} if args.log_interval else {}
        model.learn(
            remaining, callback=CallbackList(callbacks), progress_bar=progress, **interval,
            reset_num_timesteps=not args.resume, tb_log_name=name,
        )  # fmt: skip


def summarise(
    model: Any, evaluator: Any, run_dir: Path, save_path: Path, warm_eval: dict[str, Any] | None
) -> dict[str, Any]:
    """The JSON line ``main`` prints: paths, timesteps, the last evaluation (and with a warm
    start its step-0 evaluation and the best one)."""
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": str(save_path),
        "timesteps": int(model.num_timesteps),
    }
    if evaluator is not None and evaluator.results:
        summary["eval"] = evaluator.results[-1]
        if warm_eval is not None:
            summary["warm_start_eval"] = warm_eval

            def score(result: dict[str, Any]) -> float:
                value = primary_score(result)
                return -np.inf if value is None else value

            summary["best_eval"] = max(evaluator.results, key=score)
    return summary


# -- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m agents.train`` and ``lmgym train``; returns an exit code."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch as th

    if args.threads:
        th.set_num_threads(args.threads)
    _register_envs(args.env_id)
    plan = resolve_hyperparams(args)
    name, run_dir, save_path = run_paths(args)

    venv = make_env(args.env_id, plan.n_envs, args.seed, plan.make_kwargs)
    warning = check_tokenizer(venv, plan.backbone)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    policy_kwargs = full_policy_kwargs(args, plan, venv)
    model, previous_csv = build_model(args, plan, policy_kwargs, venv, run_dir, save_path)
    callbacks: list[Any] = []
    save = make_saver(model, callbacks, args, plan, name)
    write_args_json(run_dir, args, plan, policy_kwargs)

    warm_start(model, args, plan)
    added, evaluator = build_callbacks(args, plan, model, run_dir, save, save_path)
    callbacks.extend(added)
    warm_eval = None
    if evaluator is not None and args.warm_start and not args.resume:
        evaluator.init_callback(model)  # step 0: the warm start is a candidate best
        warm_eval = evaluator.run()
    learn(model, args, plan, callbacks, previous_csv, name)

    if evaluator is not None and evaluator.stale():
        evaluator.init_callback(model)
        evaluator.run()
    save(save_path, resume_state=True)
    print(json.dumps(summarise(model, evaluator, run_dir, save_path, warm_eval), default=repr))
    venv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

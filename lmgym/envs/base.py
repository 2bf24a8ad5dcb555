"""Single and vector envs over a :class:`~lmgym.envs.core.TaskCore`.

Family modules subclass these two and set ``core_class``; they add documentation, not
logic. Everything Gymnasium asks of an env (seeding, action checks, autoreset, infos,
rendering, pickling) lives here once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lmgym.envs.core import _CORES, State, TaskCore, make_core  # noqa: F401  (re-exported)
from lmgym.envs.sampling import ExampleSampler

_DICT_BUILDERS: dict[tuple[str, ...], Any] = {}


def _dict_builder(keys: tuple[str, ...]) -> Any:
    """``f(*values) -> {keys[0]: values[0], ...}`` as one dict literal: twice as fast as
    ``dict(zip(keys, values))`` when building a final observation per finished slot (the
    code generation ``collections.namedtuple`` uses; keys enter as ``repr`` literals)."""
    builder = _DICT_BUILDERS.get(keys)
    if builder is None:
        args = ", ".join(f"_{i}" for i in range(len(keys)))
        body = ", ".join(f"{key!r}: _{i}" for i, key in enumerate(keys))
        builder = _DICT_BUILDERS[keys] = eval(f"lambda {args}: {{{body}}}")  # noqa: S307
    return builder


def check_actions(actions: Any, n_actions: int, batch: int | None) -> np.ndarray:
    """Validate and convert actions to ``int64`` (shape ``(batch,)``, or scalar when ``batch`` is None)."""
    array = np.asarray(actions)
    if array.dtype.kind not in "iub":
        if array.dtype.kind == "f" and np.isfinite(array).all() and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise TypeError(f"actions must be integers, got dtype {array.dtype} ({actions!r:.80})")
    expected = () if batch is None else (batch,)
    if array.shape != expected and not (batch is None and array.shape == (1,)):
        raise ValueError(f"expected an action of shape {expected}, got shape {array.shape}")
    array = array.astype(np.int64, copy=False).reshape(expected)
    # Two reductions instead of three temporaries: this runs on every vector step.
    if array.size and (array.min() < 0 or array.max() >= n_actions):
        bad = array[(array < 0) | (array >= n_actions)].ravel()[0]
        raise ValueError(
            f"action {int(bad)} out of range: the action space is Discrete({n_actions}), valid actions 0..{n_actions - 1}"
        )
    return array


class _CoreFacts:
    """What both env classes tell about their core: tokenizer, task family and metric."""

    core: TaskCore
    state: State

    @property
    def tokenizer(self) -> Any:
        """The :class:`tokenizers.Tokenizer` whose ids the observations hold."""
        return self.core.tokenizer

    @property
    def family(self) -> str:
        """The task family (``"ner"``, ``"classification"``, ``"qa"``, ``"translation"``,
        ``"multiple_choice"`` or ``"multitask"``): what head a policy needs."""
        return self.core.family

    @property
    def metric(self) -> str | None:
        """The corpus metric the family is judged by (:data:`~lmgym.envs.core.FAMILY_METRIC`)."""
        return self.core.metric

    def _render_slot0(self) -> str | None:
        """Slot 0 as text: returned (``"ansi"``), printed (``"human"``), or nothing (no mode)."""
        mode = getattr(self, "render_mode", None)
        text = None if mode is None else self.core.render_text(self.state, 0)
        if mode == "human":
            print(text)
            return None
        return text


class RenderModeError(ValueError, TypeError):
    """An unknown render mode; a ``TypeError`` too, on which SB3 retries an env id without
    its ``render_mode="rgb_array"`` (so ``PPO(policy, "lmgym/SST2-v0")`` works)."""


class LmgymEnv(_CoreFacts, gym.Env):
    """A single lmgym env: a batch of one episode over the family's core."""

    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"], "render_fps": 4}
    core_class: ClassVar[type[TaskCore]]

    def __init__(self, render_mode: str | None = None, shuffle: bool = True, **kwargs: Any) -> None:
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            raise RenderModeError(f"render_mode={render_mode!r}: choose one of {modes} or None")
        self._kwargs = dict(kwargs, shuffle=shuffle)
        self.render_mode = render_mode
        self.core = make_core(self.core_class, kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self.state = self.core.init_state(1)
        self.sampler = ExampleSampler(self.core.n_examples, 1, shuffle)
        self._needs_reset = True
        self._all = np.zeros(1, dtype=np.int64)

    # -- the shared API ---------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """``bool[n_actions]``: valid actions now (read by sb3-contrib's MaskablePPO)."""
        return self.core.action_masks(self.state)[0]

    def expert_action(self) -> int:
        """The gold action in the current state."""
        self._check_started()
        return int(self.core.expert_actions(self.state)[0])

    def episode_record(self) -> dict[str, Any]:
        """Predictions and references of the current (finished) episode, for corpus metrics."""
        return self.core.episode_record(self.state, 0)

    # -- Gymnasium API ----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or not self.sampler.rngs:
            self.sampler.seed([self.np_random])
        example = self.sampler.draw(self._all)
        self.core.load_examples(self.state, self._all, example)
        if self.core.augments:
            self.core.augment_examples(self.state, self._all, self.sampler.noise_for(self._all))
        self._needs_reset = False
        if self.render_mode == "human":
            self.render()
        return self._observation(), {"example_id": int(example[0])}

    def step(self, action: Any):
        self._check_started()
        actions = check_actions(action, self.core.n_actions, None).reshape(1)
        reward, terminated, truncated = self.core.step(self.state, actions)
        info: dict[str, Any] = {}
        if terminated[0] or truncated[0]:
            self._needs_reset = True
            metrics = self.core.episode_metrics(self.state, self._all)
            # NaN marks a metric that does not apply to this episode (MultiTask: other tasks' keys).
            info["episode_metrics"] = {
                k: float(v[0]) for k, v in metrics.items() if not np.isnan(v[0])
            }
            self.sampler.update(info["episode_metrics"])
        if self.render_mode == "human":
            self.render()
        return self._observation(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human' to gym.make"
            )
        return self._render_slot0()

    def _observation(self) -> dict[str, np.ndarray]:
        return {k: np.array(v[0]) for k, v in self.core.observe(self.state).items()}

    def _check_started(self) -> None:
        if self._needs_reset:
            raise ResetNeeded(
                "the episode is over (or never started): call env.reset() before env.step()"
            )

    # -- pickling: settings + episode state; the dataset reloads from the on-disk cache --
    def __getstate__(self) -> dict[str, Any]:
        return {
            "kwargs": self._kwargs,
            "render_mode": self.render_mode,
            "state": {k: v.copy() for k, v in self.state.items()},
            "np_random": None if self._np_random is None else self._np_random.bit_generator.state,
            "sampler": self.sampler.__getstate__(),
            "needs_reset": self._needs_reset,
        }

    def __setstate__(self, saved: dict[str, Any]) -> None:
        type(self).__init__(self, render_mode=saved["render_mode"], **saved["kwargs"])
        self.state = saved["state"]
        if saved["np_random"] is not None:
            self._np_random, _ = seeding.np_random(0)
            self._np_random.bit_generator.state = saved["np_random"]
        self.sampler.__dict__.update(saved["sampler"])
        if self.sampler.rngs and self._np_random is not None:
            self.sampler.rngs = [self._np_random]
        self._needs_reset = saved["needs_reset"]


class LmgymVectorEnv(_CoreFacts, VectorEnv):
    """``num_envs`` episodes advanced together by array operations over one core.

    Slot ``i`` behaves exactly like a single env seeded with ``seed + i`` (checked by the
    test-suite against :class:`gymnasium.vector.SyncVectorEnv`, infos included).

    :param num_envs: number of parallel episodes.
    :param autoreset_mode: ``"NextStep"`` (Gymnasium's default) or ``"SameStep"``
        (``final_obs``/``final_info`` in ``info``).
    :param copy: return copies of the observation buffers (set False to save a copy per step
        when the caller does not keep observations across steps: the returned arrays are then
        overwritten by the next ``step``).
    :param max_episode_steps: truncate episodes after this many steps, exactly like the
        ``TimeLimit`` wrapper ``gym.make`` puts on the single env (``gym.make_vec`` passes the
        registered value); ``episode_metrics`` are reported only for episodes the task ended
        itself, as with the wrapper.
    """

    metadata: dict[str, Any] = {
        "render_modes": ["ansi", "human"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    core_class: ClassVar[type[TaskCore]]

    def __init__(
        self,
        num_envs: int = 1,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        render_mode: str | None = None,
        shuffle: bool = True,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported: use NextStep or SameStep")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self._kwargs = dict(kwargs, shuffle=shuffle)
        self.num_envs = num_envs
        self.copy = copy
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.core = self._make_core(kwargs)
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state = self.core.init_state(num_envs)
        self.sampler = ExampleSampler(self.core.n_examples, num_envs, shuffle)
        self._all = np.arange(num_envs)
        self._done = np.zeros(num_envs, dtype=bool)
        self._any_done = False
        self._started = False
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def _make_core(self, kwargs: dict[str, Any]) -> TaskCore:
        return make_core(self.core_class, kwargs)

    def action_masks(self) -> np.ndarray:
        """``bool[num_envs, n_actions]``: valid actions of every slot."""
        return self.core.action_masks(self.state)

    def expert_actions(self) -> np.ndarray:
        """Gold action of every slot (``int64[num_envs]``)."""
        return self.core.expert_actions(self.state).astype(np.int64)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ):
        """Start a new episode in every slot (or, with ``options={"reset_mask": bool[n]}``, in
        the masked slots only, as :class:`~gymnasium.vector.SyncVectorEnv` does)."""
        if isinstance(seed, int):
            seeds: list[int | None] = [seed + i for i in range(self.num_envs)]
        elif seed is None:
            seeds = [None] * self.num_envs
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for {self.num_envs} envs")
            seeds = list(seed)
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True value"
                )
            if not self._started:
                raise ResetNeeded("call reset() without reset_mask first")
            slots = np.flatnonzero(mask)
            for slot in slots:
                if seeds[slot] is not None:
                    self.sampler.reseed(int(slot), seeding.np_random(seeds[slot])[0])
        else:
            slots = self._all
            if seed is not None or not self._started:
                self._np_random, _ = seeding.np_random(seeds[0])
                self.sampler.seed([seeding.np_random(s)[0] for s in seeds])
        infos: dict[str, Any] = {}
        self._restart(slots, infos)
        self._done[slots] = False
        self._any_done = bool(self._done.any())
        self._started = True
        return self._observation(), infos

    def step(self, actions: Any):
        if not self._started:
            raise ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.core.n_actions, self.num_envs)
        infos: dict[str, Any] = {}
        n = self.num_envs
        if self._any_done and self.autoreset_mode == AutoresetMode.NEXT_STEP:
            # Slots whose episode ended last step start a new one; their action is ignored.
            resetting = np.flatnonzero(self._done)
            stepping = np.flatnonzero(~self._done)
            self._restart(resetting, infos)
            rewards = np.zeros(n, dtype=np.float64)
            terminated = np.zeros(n, dtype=bool)
            truncated = np.zeros(n, dtype=bool)
            if len(stepping):
                r, te, tr = self.core.step(self.state, actions[stepping], stepping)
                rewards[stepping], terminated[stepping], truncated[stepping] = r, te, tr
            stepped: Any = stepping
        else:
            r, te, tr = self.core.step(self.state, actions)
            rewards = r.astype(np.float64)
            terminated = np.array(te, dtype=bool)
            truncated = np.array(tr, dtype=bool)
            stepped = slice(None)
        ended = terminated | truncated  # ended by the task itself
        done = ended
        if self.max_episode_steps is not None:
            self._elapsed[stepped] += 1
            truncated |= self._elapsed >= self.max_episode_steps
            done = terminated | truncated
        any_done = bool(done.any())
        ended_metrics = None
        if any_done:
            finished = np.flatnonzero(done)
            ended_slots = finished if ended is done else np.flatnonzero(ended)
            if len(ended_slots):
                self._add_episode_metrics(infos, ended_slots, "episode_metrics")
                ended_metrics = infos["episode_metrics"]
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos["final_obs"] = self._final_observations(finished)
                infos["_final_obs"] = done.copy()
                final_info: dict[str, Any] = {}
                if "episode_metrics" in infos:
                    final_info["episode_metrics"] = infos.pop("episode_metrics")
                    final_info["_episode_metrics"] = infos.pop("_episode_metrics")
                infos["final_info"] = final_info
                infos["_final_info"] = done.copy()
                self._restart(finished, infos)
                done = np.zeros(n, dtype=bool)
                any_done = False
        self._done = done
        self._any_done = any_done
        if ended_metrics is not None:  # after this step's restarts drew their examples
            self.sampler.update(ended_metrics)
        return self._observation(), rewards, terminated, truncated, infos

    def _restart(self, slots: np.ndarray, infos: dict[str, Any]) -> None:
        examples = self.sampler.draw(slots)
        self.core.load_examples(self.state, slots, examples)
        if self.core.augments:
            self.core.augment_examples(self.state, slots, self.sampler.noise_for(slots))
        self._elapsed[slots] = 0
        ids = infos.get("example_id")
        if ids is None:
            ids = infos["example_id"] = np.zeros(self.num_envs, dtype=np.int64)
            infos["_example_id"] = np.zeros(self.num_envs, dtype=bool)
        ids[slots] = examples
        infos["_example_id"][slots] = True

    def _add_episode_metrics(self, infos: dict[str, Any], slots: np.ndarray, key: str) -> None:
        """``infos[key][name]`` (+ ``_name`` masks) for the finished ``slots``; a NaN value
        means the metric does not apply to that episode and is masked out."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[slots] = True
        out: dict[str, np.ndarray] = {}
        for name, values in self.core.episode_metrics(self.state, slots).items():
            column = np.zeros(self.num_envs, dtype=np.float64)
            valid = ~np.isnan(values)
            if valid.all():
                column[slots] = values
                out[name], out[f"_{name}"] = column, mask.copy()
            elif valid.any():
                column[slots[valid]] = values[valid]
                name_mask = np.zeros(self.num_envs, dtype=bool)
                name_mask[slots[valid]] = True
                out[name], out[f"_{name}"] = column, name_mask
        infos[key] = out
        infos[f"_{key}"] = mask

    def _final_observations(self, finished: np.ndarray) -> np.ndarray:
        """Object array of per-slot observation dicts (``None`` where not finished), as
        :class:`~gymnasium.vector.SyncVectorEnv` returns in ``info["final_obs"]``."""
        final = self.core.observe(self.state, finished)
        keys = list(final)
        columns = [
            list(v if v.flags.owndata and v.flags.writeable else np.array(v))
            for v in final.values()
        ]
        out = np.full(self.num_envs, None, dtype=object)
        dicts = np.empty(len(finished), dtype=object)
        dicts[:] = list(map(_dict_builder(tuple(keys)), *columns))
        out[finished] = dicts
        return out

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.core.observe(self.state)
        if not self.copy:
            return obs
        # Copy what aliases the episode state; arrays the core computed afresh are already ours.
        state_ids = {id(a) for a in self.state.values()}
        return {
            k: v
            if v.flags.owndata and v.flags.writeable and id(v) not in state_ids
            else np.array(v)
            for k, v in obs.items()
        }

    def render(self) -> str | None:  # type: ignore[override]  # text, not per-slot frames
        return self._render_slot0()

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("core",)}
        state["state"] = {k: v.copy() for k, v in self.state.items()}
        return state

    def __setstate__(self, saved: dict[str, Any]) -> None:
        self.__dict__.update(saved)
        self.core = self._make_core({k: v for k, v in self._kwargs.items() if k != "shuffle"})


def vector_env(env_class: type[LmgymEnv]) -> type[LmgymVectorEnv]:
    """The native vector env of a family's ``env_class``: the same core (so the same
    arguments, plus ``num_envs``), defined in the family's module under the name with
    ``VectorEnv`` for ``Env`` (what ``gym.register``'s ``vector_entry_point`` names).

    :param env_class: the family's :class:`LmgymEnv` subclass.
    """
    name = env_class.__name__.replace("Env", "VectorEnv")
    doc = f"Native vector version of :class:`{env_class.__name__}` (same arguments plus ``num_envs``)."
    namespace = {"core_class": env_class.core_class, "__doc__": doc}
    namespace.update(__module__=env_class.__module__, __qualname__=name)
    return type(name, (LmgymVectorEnv,), namespace)

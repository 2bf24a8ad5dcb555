"""The batched transition functions every env family implements once.

A :class:`TaskCore` owns a tokenised split (read-only numpy arrays) and the task's
transition logic written over a *batch* of episodes. Episode state lives outside it, in
a ``State`` (a dict of arrays whose first axis is the batch), so one core serves any
number of envs in a process. :class:`~lmgym.envs.base.LmgymEnv` runs a batch of one,
:class:`~lmgym.envs.base.LmgymVectorEnv` a batch of ``num_envs``: there is no second copy
of the logic to drift out of sync.

``slots`` arguments select a subset of the batch (an int array of distinct indices) or,
when ``None``, all of it; implementations index state arrays with
:func:`sel` so the common all-slots case costs no fancy-indexing copy.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from tokenizers import Tokenizer

from lmgym.data.cache import CACHE_ENV
from lmgym.data.paths import DATA_DIR_ENV

State = dict[str, np.ndarray]
Slots = np.ndarray | None

#: The corpus metric each task family is judged by (a key of ``lmgym.evaluate``'s result);
#: ``env.unwrapped.metric`` reads it. MultiTask's ``score`` is the mean over its tasks of each
#: task's own metric (``"{task}/{metric}"`` keys, as GLUE averages its tasks' scores).
FAMILY_METRIC: dict[str, str] = {
    "ner": "entity_f1",
    "classification": "accuracy",
    "translation": "bleu",
    "qa": "f1",
    "multiple_choice": "accuracy",
    "multitask": "score",
}


def sel(slots: Slots) -> Any:
    """Index expression for ``slots``: the array itself, or ``slice(None)`` for all."""
    return slice(None) if slots is None else slots


class TaskCore(abc.ABC):
    """Data + batched transition logic of one task family on one split.

    Subclasses set ``family``, build their arrays in ``__init__`` and define the spaces.
    """

    family: ClassVar[str]
    single_observation_space: spaces.Dict
    single_action_space: spaces.Discrete
    tokenizer: Tokenizer
    n_examples: int

    @property
    def n_actions(self) -> int:
        return int(self.single_action_space.n)

    @property
    def metric(self) -> str | None:
        """The family's corpus metric (:data:`FAMILY_METRIC`; ``None`` for a family without one)."""
        return FAMILY_METRIC.get(self.family)

    def evaluation_examples(self, max_examples: int | None = None) -> np.ndarray:
        """The example ids :func:`lmgym.evaluate` scores: the first ``max_examples`` (all if None)."""
        n = self.n_examples if max_examples is None else min(max_examples, self.n_examples)
        return np.arange(n, dtype=np.int64)

    # -- episode state --------------------------------------------------------------
    @abc.abstractmethod
    def init_state(self, batch_size: int) -> State:
        """Allocate the state of ``batch_size`` episodes (must contain ``"example"``)."""

    @abc.abstractmethod
    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        """Start a new episode on example ``example_ids[k]`` in slot ``slots[k]``."""

    #: whether :meth:`augment_examples` changes anything (``augment=`` on the train split)
    augments: bool = False

    def augment_examples(
        self, state: State, slots: np.ndarray, rngs: list[np.random.Generator]
    ) -> None:
        """Perturb the just-loaded episodes of ``slots`` (one generator per slot); see
        :mod:`lmgym.envs.augment`. The env calls it after :meth:`load_examples` when
        :attr:`augments` is true. Families without augmentation never are."""
        raise NotImplementedError(f"{type(self).__name__} does not augment")

    @abc.abstractmethod
    def step(
        self, state: State, actions: np.ndarray, slots: Slots = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions`` (one per selected slot, already range-checked).

        :return: ``(reward float32, terminated bool, truncated bool)`` per selected slot.
        """

    @abc.abstractmethod
    def observe(self, state: State, slots: Slots = None) -> dict[str, np.ndarray]:
        """Batched observation of the selected slots (may share memory with ``state``)."""

    @abc.abstractmethod
    def action_masks(self, state: State, slots: Slots = None) -> np.ndarray:
        """``bool[k, n_actions]``: the valid actions of each selected slot."""

    @abc.abstractmethod
    def expert_actions(self, state: State, slots: Slots = None) -> np.ndarray:
        """The gold action of each selected slot (behaviour cloning, tests)."""

    # -- scoring --------------------------------------------------------------------
    @abc.abstractmethod
    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Per-episode scores of finished slots, as ``float64`` arrays."""

    @abc.abstractmethod
    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        """What :meth:`corpus_metrics` needs about the finished episode in ``slot``."""

    @abc.abstractmethod
    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """Corpus-level metrics over the records of a whole split."""

    @abc.abstractmethod
    def render_text(self, state: State, slot: int) -> str:
        """Human-readable view of the episode in ``slot`` (gold and chosen labels aligned)."""

    # -- helpers --------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """One line of facts for ``lmgym list``."""
        return {"family": self.family, "examples": self.n_examples, "actions": self.n_actions}


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` naming the choices unless ``value`` is one of them.

    :param name: the argument's name (``reward_mode``), as the message shows it.
    """
    if value not in choices:
        raise ValueError(f"{name}={value!r}: choose one of {choices}")


def int_box(
    high: int | np.ndarray, shape: tuple[int, ...], low: int = 0, dtype: type = np.int32
) -> spaces.Box:
    """A 1-D integer ``Box`` (what SB3 accepts without one-hot encoding)."""
    return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)


class LabelScoring:
    """The step and scoring shared by one-step tasks whose action is the index of the gold
    answer (classification, multiple choice): the step records the answer in
    ``state["pred"]`` and ends the episode with reward 1 for ``data[gold_key]`` (0
    otherwise), the expert plays it, episodes and the corpus are scored by accuracy. Mix in
    before :class:`TaskCore`."""

    gold_key: ClassVar[str]
    data: Any

    def _gold(self, examples: np.ndarray) -> np.ndarray:
        return self.data[self.gold_key][examples]

    def step(self, state: State, actions: np.ndarray, slots: Slots = None):
        s = sel(slots)
        state["pred"][s] = actions
        reward = (actions == self._gold(state["example"][s])).astype(np.float32)
        done = np.ones(len(reward), dtype=bool)
        return reward, done, ~done

    def expert_actions(self, state: State, slots: Slots = None) -> np.ndarray:
        return self._gold(state["example"][sel(slots)]).astype(np.int64)

    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        hit = state["pred"][slots] == self._gold(state["example"][slots])
        return {"accuracy": hit.astype(np.float64)}

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        ex = int(state["example"][slot])
        return {
            "example_id": ex,
            "pred": int(state["pred"][slot]),
            "gold": int(self._gold(np.array([ex]))[0]),
        }

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        from lmgym.metrics import accuracy

        return accuracy([r["gold"] for r in records], [r["pred"] for r in records])


# -- sharing cores between envs ---------------------------------------------------------
_CORES: dict[tuple, TaskCore] = {}
_MAX_CACHED_CORES = 32


def _hashable(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_hashable(v) for v in value)
    if isinstance(value, dict):
        return all(_hashable(v) for v in value.values())
    return value is None or isinstance(value, (str, int, float, bool, Path))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _plain_arrays(core: TaskCore) -> TaskCore:
    """Swap the core's memory-mapped data arrays for plain ``ndarray`` views of the same
    memory: ``numpy.memmap`` indexes through a Python-level ``__getitem__`` (plus
    ``__array_finalize__``), about 15 us per gather, a quarter of a 1024-slot NER step."""
    data = getattr(core, "data", None)
    if isinstance(data, dict):
        for name, array in data.items():
            if isinstance(array, np.memmap):
                data[name] = array.view(np.ndarray)
    return core


def make_core(core_class: type[TaskCore], kwargs: dict[str, Any]) -> TaskCore:
    """Build a core, sharing it between envs of this process made with equal settings.

    Cores are read-only after construction, so sharing is safe; envs made with objects
    (a tokenizer instance, a callable) get a core of their own.
    """
    if not _hashable(kwargs):
        return _plain_arrays(core_class(**kwargs))
    # Where data and caches are looked up is part of the identity of a core.
    key = (core_class, _freeze(kwargs), os.environ.get(DATA_DIR_ENV), os.environ.get(CACHE_ENV))
    core = _CORES.get(key)
    if core is None:
        core = _plain_arrays(core_class(**kwargs))
        if len(_CORES) >= _MAX_CACHED_CORES:
            _CORES.pop(next(iter(_CORES)))
        _CORES[key] = core
    return core


#: Make arguments that belong to the multi-task env, not to its tasks' cores.
ENV_ONLY_KWARGS = (
    "shuffle",
    "render_mode",
    "num_envs",
    "autoreset_mode",
    "copy",
    "max_episode_steps",
)


def task_core(
    env_id: str, common: dict[str, Any], own: dict[str, Any]
) -> tuple[TaskCore, int | None]:
    """The core a MultiTask task ``env_id`` plays, and its registered ``max_episode_steps``.

    :param env_id: a registered lmgym id (not a MultiTask one).
    :param common: make kwargs given to every task.
    :param own: this task's ``task_kwargs`` (they win over ``common``).
    """
    if env_id not in gym.registry:
        raise gym.error.UnregisteredEnv(
            f"task {env_id!r} is not registered; lmgym ids: {sorted(i for i in gym.registry if i.startswith('lmgym/'))}"
        )
    spec = gym.spec(env_id)
    entry = spec.entry_point
    env_class = load_env_creator(entry) if isinstance(entry, str) else entry
    core_class = getattr(env_class, "core_class", None)
    if core_class is None or not issubclass(core_class, TaskCore):
        raise ValueError(
            f"task {env_id!r} is not an lmgym TaskCore env; MultiTask combines envs such as lmgym/NER-v0, lmgym/SST2-v0"
        )
    if core_class.family == "multitask":
        raise ValueError("a MultiTask env cannot contain another MultiTask env")
    bad = sorted(set(own) & set(ENV_ONLY_KWARGS))
    if bad:
        raise ValueError(
            f"task_kwargs[{env_id!r}] sets {bad}: those apply to the whole MultiTask env; pass them to gym.make/make_vec"
        )
    kwargs = {**spec.kwargs, **common, **own}
    try:
        core = make_core(core_class, kwargs)
    except TypeError as exc:
        raise TypeError(
            f"{env_id}: {exc}. Arguments given to the MultiTask env go to every task; pass ones "
            f"that only some tasks take through task_kwargs={{{env_id!r}: {{...}}}}"
        ) from exc
    return core, spec.max_episode_steps

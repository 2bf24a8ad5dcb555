"""Several tasks in one env: every episode plays a task drawn by weight (or adaptively)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from lmgym.data.tokenization import TokenizerInfo, tokenizer_digest
from lmgym.envs.base import LmgymEnv, LmgymVectorEnv
from lmgym.envs.core import ENV_ONLY_KWARGS as _ENV_ONLY
from lmgym.envs.core import State, TaskCore, int_box, sel, task_core
from lmgym.envs.sampling import (  # noqa: F401  (re-exported: their former home)
    SAMPLING_MODES,
    TaskMixSampler,
    resolve_tasks,
    task_name,
)

TASK_KEY = "task_id"


class MultiTaskCore(TaskCore):
    """Batched transitions of several task cores, routed slot by slot. See :class:`MultiTaskEnv`.

    State: one full-batch sub-state per task (keys ``"{k}/{key}"``), the task of every slot
    (``"task"``), the combined example id (``"example"``: task offset + example in the task)
    and the unified observation buffers (``"obs/{key}"``), whose padding is written when an
    episode starts so a step only writes each task's live columns.
    """

    family = "multitask"

    def __init__(
        self,
        tasks: Mapping[str, float] | Sequence[str] | str = (
            "lmgym/NER-v0",
            "lmgym/SST2-v0",
            "lmgym/TREC-v0",
        ),
        task_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        **common: Any,
    ) -> None:
        self.task_ids, self.weights = resolve_tasks(tasks)
        task_kwargs = dict(task_kwargs or {})
        unknown = sorted(set(task_kwargs) - set(self.task_ids))
        if unknown:
            raise ValueError(f"task_kwargs names {unknown}, which are not in tasks {self.task_ids}")
        bad = sorted(set(common) & set(_ENV_ONLY))
        if bad:
            raise ValueError(f"{bad} are env arguments, not task arguments")
        built = [task_core(i, common, dict(task_kwargs.get(i, {}))) for i in self.task_ids]
        self.cores: list[TaskCore] = [core for core, _ in built]
        self.time_limits = np.array([limit or 0 for _, limit in built], dtype=np.int64)
        self.task_names = [task_name(i) for i in self.task_ids]
        self.task_families = [core.family for core in self.cores]
        self.augments = any(core.augments for core in self.cores)
        self.n_tasks = len(self.cores)
        self._check_tokenizers()
        self.tokenizer = self.cores[0].tokenizer
        self.token_info = getattr(self.cores[0], "token_info", None) or TokenizerInfo.of(
            self.tokenizer
        )

        self.sizes = np.array([core.n_examples for core in self.cores], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.n_examples = int(self.offsets[-1])
        self.task_n_actions = np.array([core.n_actions for core in self.cores], dtype=np.int64)
        self.single_action_space = spaces.Discrete(int(self.task_n_actions.max()))
        self._build_spaces()
        self._sub_keys = [
            [(f"{k}/{key}", key) for key in core.init_state(1)] for k, core in enumerate(self.cores)
        ]

    # -- construction ------------------------------------------------------------------------
    def _check_tokenizers(self) -> None:
        digests = [
            getattr(getattr(c, "token_info", None), "digest", None) or tokenizer_digest(c.tokenizer)
            for c in self.cores
        ]
        for k in range(1, self.n_tasks):
            if digests[k] != digests[0]:
                raise ValueError(
                    f"MultiTask tasks must share one observation tokenizer, but {self.task_ids[0]} and "
                    f"{self.task_ids[k]} tokenise differently (with tokenizer=None each task trains a "
                    "WordPiece vocabulary on its own train split). Pass the same tokenizer to every task, "
                    "e.g. gym.make_vec('lmgym/MultiTask-v0', num_envs=..., tasks=..., tokenizer='minilm') "
                    "(or a tokenizer.json path / tokenizers.Tokenizer), and no tokenizer in task_kwargs."
                )

    def _build_spaces(self) -> None:
        """Union of the tasks' keys, each padded to the widest task, plus ``task_id``."""
        keys: dict[str, list[tuple[int, spaces.Box]]] = {}
        for k, core in enumerate(self.cores):
            for key, box in core.single_observation_space.spaces.items():
                if not isinstance(box, spaces.Box) or len(box.shape) != 1:
                    raise ValueError(
                        f"{self.task_ids[k]}: observation {key!r} is not a 1-D Box; MultiTask pads 1-D Boxes only"
                    )
                keys.setdefault(key, []).append((k, box))
        if TASK_KEY in keys:
            raise ValueError(f"a task already has an observation called {TASK_KEY!r}")
        self.obs_layout: dict[
            str, tuple[int, np.dtype, int]
        ] = {}  # key -> (width, dtype, pad fill)
        boxes: dict[str, spaces.Space] = {}
        self._present: list[list[tuple[str, int]]] = [
            [] for _ in self.cores
        ]  # (key, width) per task
        self._pads: list[list[tuple[str, int, int]]] = [
            [] for _ in self.cores
        ]  # (key, width, fill)
        self._absent: list[list[str]] = [[] for _ in self.cores]
        for key, entries in keys.items():
            dtypes = {box.dtype for _, box in entries}
            if len(dtypes) != 1:
                raise ValueError(f"observation {key!r} has different dtypes across tasks: {dtypes}")
            dtype = entries[0][1].dtype
            width = max(box.shape[0] for _, box in entries)
            low = min(int(np.min(box.low)) for _, box in entries)
            high = max(int(np.max(box.high)) for _, box in entries)
            if len(entries) < self.n_tasks:
                low, high = min(low, 0), max(high, 0)
            fill = self.token_info.pad_id if key == "input_ids" else (low if low < 0 else 0)
            self.obs_layout[key] = (width, dtype, fill)
            boxes[key] = int_box(high, (width,), low=low, dtype=dtype.type)
            for k, box in entries:
                self._present[k].append((key, box.shape[0]))
                if box.shape[0] < width:
                    self._pads[k].append((key, box.shape[0], fill))
            owners = {k for k, _ in entries}
            self._absent = [
                absent + ([key] if k not in owners else []) for k, absent in enumerate(self._absent)
            ]
        boxes[TASK_KEY] = int_box(self.n_tasks - 1, (1,))
        self.obs_layout[TASK_KEY] = (1, np.dtype(np.int32), 0)
        self.single_observation_space = spaces.Dict(boxes)

    # -- routing helpers -------------------------------------------------------------------
    def sub_state(self, state: State, k: int) -> State:
        """Task ``k``'s sub-state (views of ``state``'s arrays)."""
        return {key: state[name] for name, key in self._sub_keys[k]}

    def _groups(self, state: State, slots: np.ndarray | None):
        """``(k, rows, global_slots)`` per task with selected slots; ``rows`` index the
        selection, ``global_slots`` the batch (``None`` = the whole batch, in order)."""
        tasks = state["task"][sel(slots)]
        if len(tasks) == 0:
            return
        first = int(tasks[0])
        if self.n_tasks == 1 or not np.any(tasks != first):
            yield first, slice(None), slots
            return
        for k in range(self.n_tasks):
            rows = np.flatnonzero(tasks == k)
            if len(rows):
                yield k, rows, rows if slots is None else slots[rows]

    def split_example(self, example_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Combined example ids -> ``(task index, example id within the task)``."""
        task = np.searchsorted(self.offsets, example_ids, side="right") - 1
        return task, example_ids - self.offsets[task]

    # -- batched transitions -----------------------------------------------------------------
    def init_state(self, batch_size: int) -> State:
        state: State = {
            "example": np.zeros(batch_size, dtype=np.int64),
            "task": np.zeros(batch_size, dtype=np.int32),
        }
        for k, core in enumerate(self.cores):
            for key, value in core.init_state(batch_size).items():
                state[f"{k}/{key}"] = value
        if self.time_limits.any():
            state["elapsed"] = np.zeros(batch_size, dtype=np.int64)
        for key, (width, dtype, _) in self.obs_layout.items():
            state[f"obs/{key}"] = np.zeros((batch_size, width), dtype=dtype)
        return state

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        slots = np.asarray(slots)
        task, local = self.split_example(np.asarray(example_ids))
        state["example"][slots] = example_ids
        state["task"][slots] = task
        if "elapsed" in state:
            state["elapsed"][slots] = 0
        for k, core in enumerate(self.cores):
            mine = task == k
            if not mine.any():
                continue
            where = slots[mine]
            core.load_examples(self.sub_state(state, k), where, local[mine])
            self._write_padding(state, k, where, lambda key: f"obs/{key}")
            state[f"obs/{TASK_KEY}"][where, 0] = k

    def augment_examples(
        self, state: State, slots: np.ndarray, rngs: list[np.random.Generator]
    ) -> None:
        for k, rows, where in self._groups(state, np.asarray(slots)):
            if self.cores[k].augments:
                mine = rngs if isinstance(rows, slice) else [rngs[i] for i in rows]
                self.cores[k].augment_examples(self.sub_state(state, k), where, mine)

    def _write_padding(self, out: dict[str, np.ndarray], k: int, rows: Any, name: Any) -> None:
        for key in self._absent[k]:
            out[name(key)][rows] = 0
        for key, width, fill in self._pads[k]:
            out[name(key)][rows, width:] = fill

    def step(self, state: State, actions: np.ndarray, slots: np.ndarray | None = None):
        n = len(actions)
        reward = np.empty(n, dtype=np.float32)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        for k, rows, where in self._groups(state, slots):
            a = actions[rows]
            n_k = self.task_n_actions[k]
            if n_k < self.n_actions:
                a = (
                    a % n_k
                )  # actions past a task's range fold back into it (masked, like any masked action)
            r, te, tr = self.cores[k].step(self.sub_state(state, k), a, where)
            reward[rows], terminated[rows], truncated[rows] = r, te, tr
        if "elapsed" in state:
            s = sel(slots)
            elapsed = state["elapsed"][s] + 1
            state["elapsed"][s] = elapsed
            limit = self.time_limits[state["task"][s]]
            truncated |= (limit > 0) & (elapsed >= limit)
        return reward, terminated, truncated

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if slots is None:
            out = {key: state[f"obs/{key}"] for key in self.obs_layout}
        else:
            out = {
                key: np.zeros((len(slots), width), dtype=dtype)
                for key, (width, dtype, _) in self.obs_layout.items()
            }
        for k, rows, where in self._groups(state, slots):
            obs = self.cores[k].observe(self.sub_state(state, k), where)
            if slots is not None:
                self._write_padding(out, k, rows, lambda key: key)
                out[TASK_KEY][rows, 0] = k
            for key, width in self._present[k]:
                if width == out[key].shape[1]:
                    out[key][rows] = obs[key]
                else:
                    out[key][rows, :width] = obs[key]
        return out

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        n = len(state["task"][sel(slots)])
        out = np.zeros((n, self.n_actions), dtype=bool)
        for k, rows, where in self._groups(state, slots):
            out[rows, : self.task_n_actions[k]] = self.cores[k].action_masks(
                self.sub_state(state, k), where
            )
        return out

    def expert_actions(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros(len(state["task"][sel(slots)]), dtype=np.int64)
        for k, rows, where in self._groups(state, slots):
            out[rows] = self.cores[k].expert_actions(self.sub_state(state, k), where)
        return out

    # -- scoring ------------------------------------------------------------------------------
    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        """``"{task}/{metric}"`` per task (NaN for slots on another task: masked out of infos)."""
        slots = np.asarray(slots)
        out: dict[str, np.ndarray] = {}
        for k, rows, where in self._groups(state, slots):
            for name, values in (
                self.cores[k].episode_metrics(self.sub_state(state, k), where).items()
            ):
                column = out.setdefault(f"{self.task_names[k]}/{name}", np.full(len(slots), np.nan))
                column[rows] = values
        return out

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        k = int(state["task"][slot])
        return {
            "task": self.task_ids[k],
            "task_id": k,
            **self.cores[k].episode_record(self.sub_state(state, k), slot),
        }

    def evaluation_examples(self, max_examples: int | None = None) -> np.ndarray:
        """The first ``max_examples`` examples *of every task* (all of them if None)."""
        return np.concatenate(
            [
                offset + core.evaluation_examples(max_examples)
                for offset, core in zip(self.offsets, self.cores, strict=False)
            ]
        )

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """Each played task's corpus metrics as ``"{task}/{metric}"``, and ``score``: the mean
        of the played tasks' own metrics (entity F1, accuracy, ...)."""
        out: dict[str, float] = {}
        primary = []
        for k, core in enumerate(self.cores):
            mine = [r for r in records if r["task_id"] == k]
            if mine:
                metrics = core.corpus_metrics(mine)
                out.update({f"{self.task_names[k]}/{name}": v for name, v in metrics.items()})
                if core.metric in metrics:
                    primary.append(float(metrics[core.metric]))
        if primary:
            out["score"] = float(np.mean(primary))
        return out

    def render_text(self, state: State, slot: int) -> str:
        k = int(state["task"][slot])
        return f"task {self.task_ids[k]}\n" + self.cores[k].render_text(
            self.sub_state(state, k), slot
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "tasks": ", ".join(
                f"{i} ({w:.2f})" for i, w in zip(self.task_ids, self.weights, strict=True)
            ),
        }


class _TaskInfo:
    """What policies and logs read about the tasks (shared by the single and vector env)."""

    core: Any  # a MultiTaskCore
    sampler: Any  # a TaskMixSampler

    @property
    def task_ids(self) -> list[str]:
        """Env id of each task, indexed by the ``task_id`` observation."""
        return list(self.core.task_ids)

    @property
    def task_families(self) -> list[str]:
        """Family (``"ner"``, ``"classification"``, ...) of each task, by ``task_id``."""
        return list(self.core.task_families)

    @property
    def task_names(self) -> list[str]:
        """Metric prefix of each task (``"ner"``, ``"sst2"``, ...), by ``task_id``."""
        return list(self.core.task_names)

    @property
    def task_n_actions(self) -> list[int]:
        """Each task's own action count: its actions are ``0 .. n - 1`` of the shared space."""
        return self.core.task_n_actions.tolist()

    @property
    def task_probs(self) -> np.ndarray:
        """Current probability of each task being drawn for a new episode."""
        return self.sampler.probs.copy()

    @property
    def task_scores(self) -> np.ndarray:
        """Moving-average score per task (updated with ``sampling="adaptive"``)."""
        return self.sampler.scores.copy()


_SAMPLER_ARGS = ("sampling", "temperature", "score_rate", "min_share")


class MultiTaskEnv(_TaskInfo, LmgymEnv):
    """Several lmgym tasks behind one observation and action space.

    ## Description
    Each episode plays one task, drawn with the given probabilities (``tasks={id: weight}``;
    a list means uniform; ``sampling="adaptive"`` favours tasks with a lower recent score).
    The tasks keep their own data, rewards and episode ends; this env only routes slots to
    their task's batched transition functions and pads the observations to one layout.
    ``env.unwrapped.task_ids`` / ``task_families`` / ``task_names`` describe the tasks by
    ``task_id``, so a policy can pick its head per task.

    ## Action Space
    ``Discrete(max n_actions over the tasks)``. Task ``k`` uses actions ``0 .. n_k - 1`` with its
    own meaning; the rest are masked out in ``action_mask``. A masked action is applied like
    any lmgym masked action: one past the task's range is folded back (``action % n_k``).

    ## Observation Space
    The union of the tasks' keys, each a 1-D Box padded to the widest task:

    | key | dtype | shape | meaning |
    |---|---|---|---|
    | (each task key) | task's | (max width,) | the task's value, padded with the pad id (``input_ids``), -1 (keys whose padding is -1, e.g. ``prev_tags``) or 0; all zeros where the episode's task lacks the key |
    | action_mask | int8 | (max n_actions,) | the task's mask, 0 past its range |
    | task_id | int32 | (1,) | index of the episode's task in ``task_ids`` |

    All tasks must share one observation tokenizer (pass ``tokenizer="minilm"`` or a path).

    ## Rewards
    The episode's task's rewards, unchanged.

    ## Starting State
    A task drawn by probability, then an example of it uniformly (``shuffle=True``); with
    ``shuffle=False`` every task's split in order, task after task.

    ## Episode End
    As in the episode's task (Termination/Truncation, including its registered
    ``max_episode_steps``). ``info["episode_metrics"]`` holds ``"{task}/{metric}"`` keys, e.g.
    ``"ner/entity_f1"``, ``"sst2/accuracy"`` (masked to the slots that played that task).

    ## Arguments
    ``tasks`` (dict of weights or list; default NER, SST-2, TREC uniformly), ``task_kwargs``
    (``{env_id: {make kwargs}}`` for one task), any other make kwarg is passed to every task
    (``data_dir``, ``split``, ``tokenizer`` — registered default ``"minilm"``), ``sampling``
    (``"weights"``/``"adaptive"``), ``temperature=0.2``, ``score_rate=0.02``, ``min_share=0.1``
    (adaptive scheme, see :class:`TaskMixSampler`), ``shuffle``, ``render_mode``.

    >>> import gymnasium as gym, lmgym
    >>> envs = gym.make_vec("lmgym/MultiTask-v0", num_envs=8, data_dir="sample",
    ...                     tasks={"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.3, "lmgym/TREC-v0": 0.2})
    >>> envs.unwrapped.task_names
    ['ner', 'sst2', 'trec']

    ## Version History
    * v0: initial release.
    """

    core_class = MultiTaskCore

    def __init__(self, render_mode: str | None = None, shuffle: bool = True, **kwargs: Any) -> None:
        mix = {k: kwargs.pop(k) for k in _SAMPLER_ARGS if k in kwargs}
        super().__init__(render_mode=render_mode, shuffle=shuffle, **kwargs)
        self._kwargs.update(mix)
        self.sampler = TaskMixSampler(self.core, 1, shuffle, **mix)


class MultiTaskVectorEnv(_TaskInfo, LmgymVectorEnv):
    """Native vector version of :class:`MultiTaskEnv` (same arguments plus ``num_envs``).

    With ``sampling="weights"`` slot ``i`` equals a single env seeded ``seed + i``; the
    adaptive scheme pools the scores of all slots, so it has no single-env equivalent.
    """

    core_class = MultiTaskCore

    def __init__(self, num_envs: int = 1, **kwargs: Any) -> None:
        mix = {k: kwargs.pop(k) for k in _SAMPLER_ARGS if k in kwargs}
        super().__init__(num_envs=num_envs, **kwargs)
        self.sampler = TaskMixSampler(self.core, num_envs, self._kwargs["shuffle"], **mix)

"""Which example each episode plays: the same draws in the single and the vector env.

Slot ``i`` of a vector env seeded with ``s`` draws exactly the examples that a single env
reset with seed ``s + i`` draws, because both go through :class:`ExampleSampler`.
Random order draws blocks of example ids from the slot's own ``np.random.Generator``
(so the hot path is one gather, not one Python call per finished episode); ordered
iteration (``shuffle=False``) makes slot ``i`` of ``n`` play examples ``i, i+n, i+2n, ...``,
so a vector env covers the split exactly once in its first ``ceil(size/n)`` rounds
(of the ids in ``order`` instead, where it is set: ``lmgym.evaluate`` scoring a subset).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BLOCK = 64
SAMPLING_MODES = ("weights", "adaptive")


class ExampleSampler:
    """Per-slot example streams.

    :param n_examples: size of the split.
    :param n_slots: number of parallel episodes (1 for a single env).
    :param shuffle: draw uniformly at random (with replacement) instead of in order.
    """

    def __init__(self, n_examples: int, n_slots: int, shuffle: bool) -> None:
        self.n_examples = n_examples
        self.n_slots = n_slots
        self.shuffle = shuffle
        self.rngs: list[np.random.Generator] = []
        self.noise: list[np.random.Generator] = []
        self.buffer = np.zeros((n_slots, BLOCK), dtype=np.int64)
        self.cursor = np.full(n_slots, BLOCK, dtype=np.int64)
        self.position = np.arange(n_slots, dtype=np.int64)
        #: ordered iteration walks these example ids instead of ``0 .. n_examples - 1``
        self.order: np.ndarray | None = None

    def seed(self, rngs: list[np.random.Generator]) -> None:
        """Restart every stream: random streams from ``rngs``, ordered ones from the top;
        each slot's augmentation generator is spawned from its ``rng`` (:attr:`noise`)."""
        assert len(rngs) == self.n_slots, "one generator per slot"
        self.rngs = rngs
        self.noise = [rng.spawn(1)[0] for rng in rngs]
        self.cursor[:] = BLOCK
        self.position[:] = np.arange(self.n_slots)

    def reseed(self, slot: int, rng: np.random.Generator) -> None:
        """Restart the stream of one slot (a single env reset with a seed)."""
        self.rngs[slot] = rng
        self.noise[slot] = rng.spawn(1)[0]
        self.cursor[slot] = BLOCK
        self.position[slot] = slot

    def noise_for(self, slots: np.ndarray) -> list[np.random.Generator]:
        """The augmentation generators of ``slots`` (spawned children: drawing from them
        never changes which examples the slots play)."""
        return [self.noise[int(slot)] for slot in slots]

    def draw(self, slots: np.ndarray) -> np.ndarray:
        """Next example id for each of ``slots`` (distinct slot indices)."""
        if not self.shuffle:
            if self.order is None:
                ids = self.position[slots] % self.n_examples
            else:
                ids = self.order[self.position[slots] % len(self.order)]
            self.position[slots] += self.n_slots
            return ids
        for slot in slots[self.cursor[slots] >= BLOCK]:
            self.buffer[slot] = self.rngs[slot].integers(self.n_examples, size=BLOCK)
            self.cursor[slot] = 0
        ids = self.buffer[slots, self.cursor[slots]]
        self.cursor[slots] += 1
        return ids

    def update(self, metrics: Mapping[str, np.ndarray] | None) -> None:
        """Hear the scores of the episodes that just ended (``info["episode_metrics"]``, which
        the envs pass after every step that ended one); these streams do not depend on them,
        :class:`TaskMixSampler`'s adaptive mix does."""

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


# -- task mixes (MultiTask) ---------------------------------------------------------------
def task_name(env_id: str) -> str:
    """Short metric prefix of a task: ``"lmgym/SST2-v0"`` -> ``"sst2"``."""
    name = env_id.split("/")[-1]
    return re.sub(r"-v\d+$", "", name).lower().replace("-", "_")


def resolve_tasks(tasks: Mapping[str, float] | Sequence[str] | str) -> tuple[list[str], np.ndarray]:
    """Task ids and sampling probabilities from ``{id: weight}`` or a list (uniform).

    The ids come back sorted, so a task's ``task_id`` does not depend on how the mix was
    written: a policy trained on ``{"lmgym/SST2-v0": 1, "lmgym/NER-v0": 1}`` reads the same
    ids from an env rebuilt from saved (key-sorted JSON) settings.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    if isinstance(tasks, Mapping):
        ids, weights = list(tasks), np.array([float(w) for w in tasks.values()], dtype=np.float64)
    else:
        ids, weights = list(tasks), np.ones(len(tasks), dtype=np.float64)
    if not ids:
        raise ValueError(
            "tasks is empty: pass {'lmgym/NER-v0': 0.5, 'lmgym/SST2-v0': 0.5} or a list of env ids"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"tasks lists an env id twice: {ids}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(
            f"task weights must be finite, >= 0 and not all 0, got {dict(zip(ids, weights.tolist(), strict=True))}"
        )
    order = np.argsort(ids, kind="stable")
    return [ids[i] for i in order], weights[order] / weights.sum()


class TaskMixSampler(ExampleSampler):
    """Each slot draws a task by probability, then an example of that task uniformly.

    One uniform number per episode from the slot's own generator picks both (the task by
    where it falls in the cumulative probabilities, the example by its position inside
    that task's interval), so a vector slot ``i`` draws what a single env seeded ``s + i``
    draws, and probabilities changed by the adaptive scheme apply from the next episode.
    ``shuffle=False`` iterates every task's split in order, one task after the other.

    :param core: the :class:`~lmgym.envs.multitask.MultiTaskCore` (its ``n_examples``,
        ``sizes``, ``offsets``, ``task_names`` and ``weights``).
    :param sampling: ``"weights"`` (fixed probabilities) or ``"adaptive"``: probabilities
        ``(1 - min_share) * softmax(log w - score / temperature) + min_share * w`` where
        ``score`` is an exponential moving average (rate ``score_rate`` per episode) of each
        task's first episode metric (entity F1, accuracy, ...), so weaker tasks are played more.
    """

    def __init__(
        self,
        core: Any,
        n_slots: int,
        shuffle: bool,
        sampling: str = "weights",
        temperature: float = 0.2,
        score_rate: float = 0.02,
        min_share: float = 0.1,
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling={sampling!r}: choose one of {SAMPLING_MODES}")
        if temperature <= 0 or not 0 < score_rate <= 1 or not 0 <= min_share <= 1:
            raise ValueError("need temperature > 0, 0 < score_rate <= 1 and 0 <= min_share <= 1")
        super().__init__(core.n_examples, n_slots, shuffle)
        self.buffer = np.zeros((n_slots, BLOCK), dtype=np.float64)
        self.sizes, self.offsets = core.sizes.copy(), core.offsets.copy()
        self.task_names = list(core.task_names)
        self.weights = core.weights.copy()
        self.sampling, self.temperature, self.score_rate, self.min_share = (
            sampling,
            temperature,
            score_rate,
            min_share,
        )
        self.scores = np.zeros(len(self.sizes), dtype=np.float64)
        self.episodes = np.zeros(len(self.sizes), dtype=np.int64)
        self.probs = self.weights.copy()
        self._cdf = np.cumsum(self.probs)

    def draw(self, slots: np.ndarray) -> np.ndarray:
        if not self.shuffle:
            return super().draw(slots)
        for slot in slots[self.cursor[slots] >= BLOCK]:
            self.buffer[slot] = self.rngs[slot].random(BLOCK)
            self.cursor[slot] = 0
        u = self.buffer[slots, self.cursor[slots]]
        self.cursor[slots] += 1
        task = np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self.sizes) - 1)
        low = self._cdf[task] - self.probs[task]
        within = (u - low) / np.maximum(self.probs[task], 1e-300)
        local = np.clip((within * self.sizes[task]).astype(np.int64), 0, self.sizes[task] - 1)
        return self.offsets[task] + local

    def update(self, metrics: Mapping[str, np.ndarray] | None) -> None:
        """Fold finished episodes' scores (``info["episode_metrics"]``) into the task scores."""
        if self.sampling != "adaptive" or not metrics:
            return
        for k, name in enumerate(self.task_names):
            key = next(
                (m for m in metrics if m.startswith(f"{name}/") and not m.startswith("_")), None
            )
            if key is None:
                continue
            values = np.atleast_1d(metrics[key])
            mask = metrics.get(f"_{key}")
            if mask is not None:
                values = values[np.asarray(mask)]
            if len(values) == 0:
                continue
            keep = (1.0 - self.score_rate) ** len(values)
            self.scores[k] = keep * self.scores[k] + (1.0 - keep) * float(np.mean(values))
            self.episodes[k] += len(values)
        logits = np.log(np.maximum(self.weights, 1e-300)) - self.scores / self.temperature
        soft = np.exp(logits - logits.max()) * (self.weights > 0)
        self.probs = (1.0 - self.min_share) * soft / soft.sum() + self.min_share * self.weights
        self._cdf = np.cumsum(self.probs)

"""Which example each episode plays: the same draws in the single and the vector env.

Slot ``i`` of a vector env seeded with ``s`` draws exactly the examples that a single env
reset with seed ``s + i`` draws, because both go through :class:`ExampleSampler`.
Random order draws blocks of example ids from the slot's own ``np.random.Generator``
(so the hot path is one gather, not one Python call per finished episode); ordered
iteration (``shuffle=False``) makes slot ``i`` of ``n`` play examples ``i, i+n, i+2n, ...``,
so a vector env covers the split exactly once in its first ``ceil(size/n)`` rounds.
"""

from __future__ import annotations

import numpy as np

BLOCK = 64


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
        self.buffer = np.zeros((n_slots, BLOCK), dtype=np.int64)
        self.cursor = np.full(n_slots, BLOCK, dtype=np.int64)
        self.position = np.arange(n_slots, dtype=np.int64)

    def seed(self, rngs: list[np.random.Generator]) -> None:
        """Restart every stream: random streams from ``rngs``, ordered ones from the top."""
        assert len(rngs) == self.n_slots, "one generator per slot"
        self.rngs = rngs
        self.cursor[:] = BLOCK
        self.position[:] = np.arange(self.n_slots)

    def reseed(self, slot: int, rng: np.random.Generator) -> None:
        """Restart the stream of one slot (a single env reset with a seed)."""
        self.rngs[slot] = rng
        self.cursor[slot] = BLOCK
        self.position[slot] = slot

    def draw(self, slots: np.ndarray) -> np.ndarray:
        """Next example id for each of ``slots`` (distinct slot indices)."""
        if not self.shuffle:
            ids = self.position[slots] % self.n_examples
            self.position[slots] += self.n_slots
            return ids
        for slot in slots[self.cursor[slots] >= BLOCK]:
            self.buffer[slot] = self.rngs[slot].integers(self.n_examples, size=BLOCK)
            self.cursor[slot] = 0
        ids = self.buffer[slots, self.cursor[slots]]
        self.cursor[slots] += 1
        return ids

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

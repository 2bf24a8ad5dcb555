"""Training-time text augmentation (``augment=``): token masking, dropout and swaps.

``gym.make("lmgym/SST2-v0", augment={"mask": 0.1, "swap": 0.05})`` perturbs the token row of
every *training* episode as it starts; on ``split="validation"`` or ``"test"`` the argument
is ignored, so the kwargs a policy trained with also score it cleanly. Each operation acts
on the tokens between ``[CLS]`` and ``[SEP]``, independently per token with the given
probability:

* ``mask``: the token becomes ``[MASK]`` (``[UNK]`` for a vocabulary without one);
* ``drop``: the token is removed and the row closes up (at least one token stays);
* ``swap``: the token trades places with the next one.

They apply in the order drop, swap, mask. Families that point into the row (NER's word
positions) take only ``mask``, which keeps every position; see each family's
``augment_ops``. The randomness comes from a generator spawned from the slot's example
sampler when the env is seeded (:class:`~lmgym.envs.sampling.ExampleSampler`), so the same
``reset(seed=...)`` gives the same augmented episodes, slot ``i`` of a vector env equals a
single env seeded ``seed + i``, and switching augmentation on does not change which
examples are played.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: every operation, in the order they are applied
AUGMENT_OPS = ("drop", "swap", "mask")


class Augmenter:
    """Apply an ``augment=`` spec to token rows.

    :param spec: operation -> probability, e.g. ``{"mask": 0.1}``.
    :param allowed: the operations the family supports.
    :param family: the family's name (for error messages).
    :param mask_id: the id written by ``mask``.
    :param pad_id: the id that fills a row after its ``[SEP]``.
    """

    def __init__(
        self,
        spec: Mapping[str, float],
        allowed: Sequence[str],
        family: str,
        mask_id: int,
        pad_id: int,
    ) -> None:
        if not isinstance(spec, Mapping):
            raise TypeError(
                f"augment={spec!r}: pass a mapping of operation to probability, e.g. {{'mask': 0.1}}"
            )
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise ValueError(
                f"augment: {unknown} not supported by the {family} family; it takes {list(allowed)}"
            )
        self.p = {op: float(spec[op]) for op in AUGMENT_OPS if op in spec}
        bad = {op: p for op, p in self.p.items() if not 0.0 <= p < 1.0}
        if bad:
            raise ValueError(f"augment: probabilities must be in [0, 1), got {bad}")
        self.mask_id, self.pad_id = int(mask_id), int(pad_id)

    def __repr__(self) -> str:
        return f"Augmenter({self.p})"

    def apply(
        self, rows: np.ndarray, lengths: np.ndarray, rngs: Sequence[np.random.Generator]
    ) -> np.ndarray:
        """Augment ``[CLS] ... [SEP]`` rows in place; return their new lengths.

        :param rows: ``int[n, L]`` token rows (padding past ``lengths``).
        :param lengths: ``int[n]`` row lengths, ``[CLS]`` and ``[SEP]`` included.
        :param rngs: one generator per row.
        """
        lengths = np.asarray(lengths).copy()
        for i, rng in enumerate(rngs):
            n = int(lengths[i])
            if n <= 2:
                continue
            content = rows[i, 1 : n - 1].copy()
            if "drop" in self.p:
                keep = rng.random(len(content)) >= self.p["drop"]
                if not keep.any():
                    keep[rng.integers(len(content))] = True
                content = content[keep]
            if "swap" in self.p and len(content) > 1:
                flips = rng.random(len(content) - 1) < self.p["swap"]
                j = 0
                while j < len(content) - 1:
                    if flips[j]:
                        content[j], content[j + 1] = content[j + 1], content[j]
                        j += 2
                    else:
                        j += 1
            if "mask" in self.p:
                content[rng.random(len(content)) < self.p["mask"]] = self.mask_id
            if len(content) + 2 < n:  # dropped tokens: [SEP] moves up, the tail is padding
                rows[i, len(content) + 1] = rows[i, n - 1]
                rows[i, len(content) + 2 : n] = self.pad_id
            rows[i, 1 : len(content) + 1] = content
            lengths[i] = len(content) + 2
        return lengths


__all__ = ["AUGMENT_OPS", "Augmenter"]

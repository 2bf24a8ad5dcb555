"""Episode-grouped rollout buffers: minibatches hold whole episodes, not scattered steps.

SB3's ``RolloutBuffer.get`` shuffles every step of the rollout independently, so a NER
minibatch of 64 steps holds ~30 different sentences and the encoder runs over ~30
sentences to train 64 words. These buffers shuffle *episodes* instead (the run of steps
of one env between two episode starts, in time order) and cut the shuffled sequence into
minibatches of ``batch_size``: a minibatch then holds ~5 sentences, and the extractor's
dedup (``agents.extractor``) encodes each once. Same data, same number and size of
minibatches per epoch; only which steps share a minibatch changes, so this *is* a change
of the algorithm's sampling (minibatch gradients are more correlated) and an option, not
an exact saving. Plug in through SB3's own hook::

    PPO(TransformerPolicy, env, rollout_buffer_class=EpisodeGroupedDictRolloutBuffer)
    MaskablePPO(MaskableTransformerPolicy, env,
                rollout_buffer_class=MaskableEpisodeGroupedDictRolloutBuffer)

or ``--hp minibatch=episodes`` with ``agents.train`` (:func:`rollout_buffer_class`).
Single-step tasks (classification) have one-step episodes: grouping changes nothing.
The order is drawn from numpy's global RNG, as SB3's own permutation is.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer

#: ``--hp minibatch=...`` values.
MINIBATCH_MODES = ("random", "episodes")


def episode_order(episode_starts: np.ndarray, rng: Any = None) -> np.ndarray:
    """Flat buffer indices with each episode's steps together, episodes in random order.

    :param episode_starts: ``[n_steps, n_envs]`` flags (1 where a step starts an episode),
        as SB3 stores them; flat index ``env * n_steps + step`` (SB3's ``swap_and_flatten``).
    :param rng: a ``numpy.random.Generator``; default numpy's global RNG, which SB3 seeds
        and draws its own minibatch permutation from.
    :return: a permutation of ``range(n_steps * n_envs)``.
    """
    n_steps, n_envs = episode_starts.shape
    segments: list[np.ndarray] = []
    for env in range(n_envs):
        cuts = np.flatnonzero(episode_starts[1:, env]) + 1
        segments += np.split(env * n_steps + np.arange(n_steps), cuts)
    order = (rng or np.random).permutation(len(segments))
    return np.concatenate([segments[i] for i in order])


class _EpisodeGroupedMixin:
    """``get`` with :func:`episode_order` in place of SB3's step permutation."""

    observations: dict[str, np.ndarray]
    episode_starts: np.ndarray
    buffer_size: int
    n_envs: int
    full: bool
    generator_ready: bool
    _tensor_names = ("actions", "values", "log_probs", "advantages", "returns")

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:  # type: ignore[override]
        assert self.full, "the rollout buffer is not full yet"
        indices = episode_order(self.episode_starts)
        if not self.generator_ready:
            for key, obs in self.observations.items():
                self.observations[key] = self.swap_and_flatten(obs)  # type: ignore[attr-defined]
            for name in self._tensor_names:
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])  # type: ignore[attr-defined]
            self.generator_ready = True
        total = self.buffer_size * self.n_envs
        batch_size = total if batch_size is None else batch_size
        for start in range(0, total, batch_size):
            yield self._get_samples(indices[start : start + batch_size])  # type: ignore[attr-defined]


class EpisodeGroupedDictRolloutBuffer(_EpisodeGroupedMixin, DictRolloutBuffer):
    """``DictRolloutBuffer`` whose minibatches hold whole episodes (PPO, A2C, TRPO)."""


class MaskableEpisodeGroupedDictRolloutBuffer(_EpisodeGroupedMixin, MaskableDictRolloutBuffer):
    """``MaskableDictRolloutBuffer`` whose minibatches hold whole episodes (MaskablePPO)."""

    _tensor_names = (*_EpisodeGroupedMixin._tensor_names, "action_masks")


def rollout_buffer_class(minibatch: str, algo: str) -> type | None:
    """The buffer class for ``minibatch`` (``"random"``: the algorithm's own, ``None``).

    :param minibatch: one of :data:`MINIBATCH_MODES`.
    :param algo: ``agents.train`` algorithm name (``maskable_ppo`` needs the maskable buffer).
    """
    if minibatch not in MINIBATCH_MODES:
        raise ValueError(f"minibatch={minibatch!r}: choose one of {MINIBATCH_MODES}")
    if minibatch == "random":
        return None
    if algo == "maskable_ppo":
        return MaskableEpisodeGroupedDictRolloutBuffer
    if algo in ("dqn", "reinforce"):
        raise ValueError(
            f"minibatch='episodes' is for PPO, A2C, TRPO and MaskablePPO, not {algo!r} "
            "(DQN samples a replay buffer; REINFORCE trains on the whole rollout at once)"
        )
    return EpisodeGroupedDictRolloutBuffer

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
#: ``--hp advantages=...`` values: the algorithm's own (SB3: standardised per minibatch), over
#: the whole rollout, or within each task of a MultiTask rollout (``task_id`` observation).
ADVANTAGE_MODES = ("minibatch", "pooled", "task")


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


def normalize_within(advantages: np.ndarray, groups: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Standardise ``advantages`` within each group: zero mean, unit std per group.

    >>> a = np.array([1.0, 3.0, 10.0, 30.0])
    >>> normalize_within(a, np.array([0, 0, 1, 1])).round(3).tolist()
    [-1.0, 1.0, -1.0, 1.0]

    A one-step group gets 0 (its own mean). ``groups`` has ``advantages``' shape.
    """
    out = np.empty_like(advantages, dtype=np.float64)
    for group in np.unique(groups):
        sel = groups == group
        values = advantages[sel].astype(np.float64)
        out[sel] = (values - values.mean()) / (values.std() + eps)
    return out.astype(advantages.dtype)


def task_ids(observations: dict[str, np.ndarray]) -> np.ndarray:
    """``[n_steps, n_envs]`` task ids of a (not yet flattened) rollout's observations."""
    if "task_id" not in observations:
        raise ValueError(
            "advantages='task' needs a MultiTask env (observation 'task_id'); "
            "use advantages='pooled' or 'minibatch' for a single task"
        )
    ids = observations["task_id"]
    return ids.reshape(ids.shape[:2])


class _AdvantageNormMixin:
    """Advantages standardised once per rollout, pooled or within each task (multi-task PPO).

    A NER episode sums up to ~14 per-tag rewards, a classification episode gives 0 or 1: with
    pooled statistics the task with the largest reward scale dominates the surrogate. Within
    each ``task_id`` every task's advantages have unit scale. Runs after SB3 computed the
    returns (the critic's targets are unchanged); the algorithm's own per-minibatch
    normalisation must be off (``agents.train`` does that for ``advantages=task|pooled``).
    """

    advantage_mode = "task"
    observations: dict[str, np.ndarray]
    advantages: np.ndarray

    def compute_returns_and_advantage(self, last_values: Any, dones: np.ndarray) -> None:
        super().compute_returns_and_advantage(last_values, dones)  # type: ignore[misc]
        if self.advantage_mode == "task":
            groups = task_ids(self.observations)
        else:
            groups = np.zeros(self.advantages.shape, dtype=np.int64)
        self.advantages = normalize_within(self.advantages, groups)


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


def rollout_buffer_class(minibatch: str, algo: str, advantages: str = "minibatch") -> type | None:
    """The buffer class for ``minibatch`` and ``advantages`` (``None``: the algorithm's own).

    :param minibatch: one of :data:`MINIBATCH_MODES`.
    :param algo: ``agents.train`` algorithm name (``maskable_ppo`` needs the maskable buffer).
    :param advantages: one of :data:`ADVANTAGE_MODES` (REINFORCE normalises in its own
        buffer: pass ``normalize_advantage="task"`` to :class:`agents.REINFORCE` instead).
    """
    if minibatch not in MINIBATCH_MODES:
        raise ValueError(f"minibatch={minibatch!r}: choose one of {MINIBATCH_MODES}")
    if advantages not in ADVANTAGE_MODES:
        raise ValueError(f"advantages={advantages!r}: choose one of {ADVANTAGE_MODES}")
    if algo in ("dqn", "reinforce") and (minibatch, advantages) != ("random", "minibatch"):
        raise ValueError(
            f"minibatch/advantages options are for PPO, A2C, TRPO and MaskablePPO, not {algo!r} "
            "(DQN samples a replay buffer; REINFORCE trains on the whole rollout at once and "
            "takes normalize_advantage='task')"
        )
    if (minibatch, advantages) == ("random", "minibatch"):
        return None
    maskable = algo == "maskable_ppo"
    if minibatch == "episodes":
        base = (
            MaskableEpisodeGroupedDictRolloutBuffer if maskable else EpisodeGroupedDictRolloutBuffer
        )
    else:
        base = MaskableDictRolloutBuffer if maskable else DictRolloutBuffer
    if advantages == "minibatch":
        return base
    name = f"{advantages.title()}Normalized{base.__name__}"
    return type(
        name, (_AdvantageNormMixin, base), {"advantage_mode": advantages, "__module__": __name__}
    )


def apply_buffer_options(hp: dict[str, Any], algo: str) -> None:
    """Turn ``hp``'s setup keys ``minibatch`` and ``advantages`` into constructor arguments.

    In place: pops both keys and sets ``rollout_buffer_class`` (and, where the buffer now
    normalises, ``normalize_advantage=False`` so the algorithm does not normalise again per
    minibatch; REINFORCE gets ``normalize_advantage="task"`` / ``True`` instead).
    """
    minibatch = str(hp.pop("minibatch", "random"))
    advantages = str(hp.pop("advantages", "minibatch"))
    if algo == "reinforce" and minibatch == "random" and advantages in ADVANTAGE_MODES:
        if advantages != "minibatch":
            hp["normalize_advantage"] = "task" if advantages == "task" else True
        return
    buffer = rollout_buffer_class(minibatch, algo, advantages)
    if buffer is not None:
        hp["rollout_buffer_class"] = buffer
    if advantages != "minibatch" and algo in ("ppo", "maskable_ppo", "trpo"):
        hp["normalize_advantage"] = False

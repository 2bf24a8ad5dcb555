"""DQN whose random actions are valid actions.

SB3's ``DQN`` explores (epsilon-greedy, and uniformly before ``learning_starts``) with
``action_space.sample()``: on lmgym envs most of those draws can be actions the
observation's ``action_mask`` rules out (padding positions in QA, tags that break IOB2,
unused target-vocabulary ids), so exploration is spent on moves the greedy policy never
makes. :class:`DQN` draws them with ``action_space.sample(mask=...)`` instead, from the
same generator and with the same number of draws; the greedy path is SB3's unchanged.
Envs without an ``action_mask`` observation behave exactly as under SB3's ``DQN``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3 import DQN as _SB3DQN


class DQN(_SB3DQN):
    """SB3 ``DQN`` exploring among the valid actions of a ``Dict`` observation's ``action_mask``."""

    def _random_actions(self, observation: Any) -> np.ndarray | None:
        """One valid random action per observation in the batch, or None without masks."""
        if not isinstance(observation, dict) or "action_mask" not in observation:
            return None
        masks = np.asarray(observation["action_mask"], dtype=np.int8)
        batched = masks.ndim == 2
        masks = masks.reshape(-1, masks.shape[-1])
        actions = np.array([self.action_space.sample(mask=m if m.any() else None) for m in masks])
        return actions if batched else actions[0]

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if not deterministic and np.random.rand() < self.exploration_rate:  # noqa: NPY002 - as SB3
            actions = self._random_actions(observation)
            if actions is None:  # no mask: SB3's draw
                if self.policy.is_vectorized_observation(observation):
                    first = (
                        observation[next(iter(observation))]
                        if isinstance(observation, dict)
                        else observation
                    )
                    actions = np.array([self.action_space.sample() for _ in range(len(first))])
                else:
                    actions = np.array(self.action_space.sample())
            return actions, state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts:
            actions = self._random_actions(self._last_obs)
            if actions is not None:
                return actions, actions
        return super()._sample_action(learning_starts, action_noise, n_envs)

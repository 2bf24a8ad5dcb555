"""Self-imitation: replay the agent's own better-than-expected actions (Oh et al., 2018).

Self-Imitation Learning (SIL; Oh, Guo, Singh and Lee, ICML 2018) keeps the transitions whose
return ``R`` beat the critic's estimate ``V(s)`` and adds ``-log pi(a|s) * [R > V(s)]`` on
minibatches of them to the on-policy loss, with ``V`` re-read from the current critic so that
a transition stops being imitated once the critic expects its return. The filter uses the
reward alone (no labels): on a tagging bandit such as NER with a per-tag reward, the
transitions it keeps are the words the agent itself tagged right, so the agent re-learns each
discovery for many updates instead of the ``n_epochs`` of the rollout that found it. That is
the same information PPO saw, used more than once; the filtered behaviour cloning of ReST and
RAFT does the same with whole samples.

Like :class:`agents.anchor.SupervisedAnchorCallback` (both are
:class:`agents.anchor.ReplayLossCallback`) it wraps the policy optimizer's ``step``, so PPO, A2C, MaskablePPO and REINFORCE take it; TRPO
and DQN are refused.

    >>> model.learn(4096, callback=SelfImitationCallback(coef=1.0))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import obs_as_tensor

from agents.anchor import ReplayLossCallback


class SelfImitationCallback(ReplayLossCallback):
    """Add ``coef`` x the self-imitation loss on the agent's own good transitions to every
    RL step.

    After each rollout the transitions with a return above the value estimate (positive
    advantage before normalisation) join a first-in-first-out buffer of ``capacity``; every
    optimizer step then adds the gradient of ``-mean log pi(a|s)`` over a minibatch of them,
    counting only those whose return still beats the current critic.

    :param coef: weight of the self-imitation loss against the RL loss (0 switches it off).
    :param min_return: ``None`` (SIL): a transition counts while its return beats the critic's
        estimate. A number: while its return exceeds that fixed threshold (the filtered
        behaviour cloning of ReST/RAFT); ``0`` on a per-tag reward imitates every tag the
        agent got right, whatever the critic expects of the word.
    :param capacity: transitions kept (the oldest go first).
    :param batch_size: transitions per RL step (``None``: the algorithm's ``batch_size``).
    :param seed: seed of the minibatch draws.
    """

    log_key = "self_imitation/loss"

    def __init__(
        self,
        coef: float,
        capacity: int = 50_000,
        batch_size: int | None = None,
        seed: int = 0,
        min_return: float | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"the self-imitation capacity must be >= 1, got {capacity}")
        super().__init__(coef, batch_size or 64, seed)
        self.capacity = int(capacity)
        self.min_return = None if min_return is None else float(min_return)
        self._batch_size = batch_size
        self._dict_obs = True  # a Dict observation space (lmgym's); set from each rollout
        self.obs: dict[str, np.ndarray] = {}
        self.actions = np.zeros((0, 1))
        self.masks = np.zeros((0, 0), dtype=bool)
        self.returns = np.zeros(0, dtype=np.float32)
        self.kept_fraction = float("nan")

    def _on_training_start(self) -> None:
        if self._batch_size is None:
            self.batch_size = int(getattr(self.model, "batch_size", None) or 64)
        super()._on_training_start()

    def _on_rollout_end(self) -> None:
        """Keep the rollout's transitions whose return beat the critic's estimate."""
        buffer = self.model.rollout_buffer
        returns = np.asarray(buffer.returns, dtype=np.float32).reshape(-1)
        values = np.asarray(buffer.values, dtype=np.float32).reshape(-1)
        keep = returns > (values if self.min_return is None else self.min_return)
        self.kept_fraction = float(keep.mean()) if keep.size else 0.0
        self.logger.record("self_imitation/kept_fraction", self.kept_fraction)
        if not keep.any():
            return
        observations, space = buffer.observations, self.model.observation_space
        self._dict_obs = isinstance(observations, dict)
        if not self._dict_obs:
            observations, space = {"obs": observations}, {"obs": space}
        n = returns.size
        obs = {k: np.asarray(v).reshape(n, *space[k].shape)[keep] for k, v in observations.items()}
        actions = np.asarray(buffer.actions).reshape(n, -1)[keep]
        masks = getattr(buffer, "action_masks", None)
        masks = (
            np.asarray(masks, dtype=bool).reshape(n, -1)[keep]
            if masks is not None
            else np.zeros((int(keep.sum()), 0), dtype=bool)
        )
        self._append(obs, actions, masks, returns[keep])
        self.logger.record("self_imitation/buffer", len(self.returns))

    def _append(
        self,
        obs: dict[str, np.ndarray],
        actions: np.ndarray,
        masks: np.ndarray,
        returns: np.ndarray,
    ) -> None:
        if len(self.returns) == 0:
            self.obs, self.actions, self.masks, self.returns = obs, actions, masks, returns
        else:
            self.obs = {k: np.concatenate([self.obs[k], obs[k]]) for k in self.obs}
            self.actions = np.concatenate([self.actions, actions])
            self.masks = np.concatenate([self.masks, masks])
            self.returns = np.concatenate([self.returns, returns])
        drop = len(self.returns) - self.capacity
        if drop > 0:
            self.obs = {k: v[drop:] for k, v in self.obs.items()}
            self.actions, self.masks = self.actions[drop:], self.masks[drop:]
            self.returns = self.returns[drop:]

    def replay_loss(self) -> th.Tensor | None:
        """``-mean log pi(a|s)`` over a minibatch, counting transitions with ``R > V(s)``."""
        if len(self.returns) == 0:
            return None
        device, policy = self.model.device, self.model.policy
        idx = self.rng.choice(
            len(self.returns), min(self.batch_size, len(self.returns)), replace=False
        )
        obs_np = {k: v[idx] for k, v in self.obs.items()}
        obs: Any = obs_as_tensor(obs_np if self._dict_obs else obs_np["obs"], device)
        actions = th.as_tensor(self.actions[idx], device=device)
        space = self.model.action_space
        if isinstance(space, spaces.Discrete):
            actions = actions.long().flatten()
        elif isinstance(space, spaces.MultiDiscrete):
            actions = actions.long()
        if self.masks.shape[1]:
            masks = th.as_tensor(self.masks[idx], device=device)
            values, log_prob, _ = policy.evaluate_actions(obs, actions, action_masks=masks)
        else:
            values, log_prob, _ = policy.evaluate_actions(obs, actions)
        returns = th.as_tensor(self.returns[idx], device=device)
        bar = values.detach().flatten() if self.min_return is None else self.min_return
        better = (returns > bar).to(log_prob.dtype)
        return -(better * log_prob).sum() / better.sum().clamp(min=1.0)

    def state_dict(self) -> dict[str, Any]:
        """The buffer and the minibatch stream, for an exact resume (``agents.resume``)."""
        return {
            **super().state_dict(),
            "buffer": (self.obs, self.actions, self.masks, self.returns),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.obs, self.actions, self.masks, self.returns = state["buffer"]

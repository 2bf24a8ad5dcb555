"""Supervised anchor: the warm start's behaviour-cloning loss mixed into every RL step.

InstructGPT's PPO-ptx (Ouyang et al., 2022, eq. 2) adds ``gamma * log pi(x)`` on the
pretraining data to the RL objective, so that fine-tuning on a reward does not undo what
supervised training taught. Here the supervised data are the warm start's own labelled
demonstrations (``--warm-start N``: the same ``N`` teacher-forced env steps, collected
again from the same seed), so the anchor costs no labels beyond the warm start's.

The callback wraps the policy optimizer's ``step``: before each RL step it adds
``coef * cross_entropy(pi(s), a_expert)`` on a minibatch of demonstrations to the
gradients the algorithm has just computed (its own clipping already done; the anchor's
gradient is clipped to the algorithm's ``max_grad_norm`` on its own). So every algorithm that
updates its policy through ``policy.optimizer`` (PPO, A2C, MaskablePPO, REINFORCE)
optimises ``L_RL + coef * L_BC``; TRPO (a line search, not an optimizer step) and DQN are
refused.

Why (docs/LEARNING.md, MiniLM NER after a 1,024-word warm start): the policy gradient of
the sampled sentence F1, estimated from 4,096 samples (512 sentences x 8, leave-one-out
baseline), raises the sampled F1 of the sentences it was computed on and lowers greedy F1
on held-out ones, while the behaviour-cloning gradient raises both.

    >>> model.learn(4096, callback=SupervisedAnchorCallback(demos, coef=1.0))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor

#: A demonstration set: ``(observations, expert actions, action masks)``.
Demonstrations = tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]


class ReplayLossCallback(BaseCallback):
    """Add ``coef`` x a replayed loss (:meth:`replay_loss`, one minibatch) to every RL step.

    Wraps the policy optimizer's ``step`` while training: before each step the gradient of
    ``coef * replay_loss()``, clipped to the algorithm's ``max_grad_norm`` on its own, is added
    to the gradients the algorithm has just computed. The base of the supervised anchor and of
    self-imitation (:mod:`agents.self_imitation`).

    :param coef: weight of the replayed loss against the RL loss (0 switches it off).
    :param batch_size: transitions per RL step.
    :param seed: seed of the minibatch draws.
    """

    #: the logger key of the replayed loss (the update's mean)
    log_key = "replay/loss"

    def __init__(self, coef: float, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        if coef < 0:
            raise ValueError(f"{type(self).__name__}: coef must be >= 0, got {coef}")
        self.coef, self.batch_size = float(coef), int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.last_loss = float("nan")
        self._original_step: Any = None
        self._own_step: Any = None
        self._losses: list[float] = []

    def replay_loss(self) -> th.Tensor | None:
        """The loss to add on one minibatch (``None``: nothing to replay yet)."""
        raise NotImplementedError

    def _on_training_start(self) -> None:
        if not hasattr(self.model, "rollout_buffer") or type(self.model).__name__ == "TRPO":
            raise ValueError(
                f"{type(self).__name__} adds to the policy optimizer's steps: use PPO, A2C, "
                f"MaskablePPO or REINFORCE, not {type(self.model).__name__}"
            )
        optimizer = self.model.policy.optimizer
        self._own_step = vars(optimizer).get("step")  # torch may have set one on the instance
        self._original_step = optimizer.step
        original = self._original_step

        def step(*args: Any, **kwargs: Any) -> Any:
            self.add_gradient()
            return original(*args, **kwargs)

        optimizer.step = step  # type: ignore[method-assign]

    def _on_training_end(self) -> None:
        if self._original_step is not None:
            optimizer = self.model.policy.optimizer
            if self._own_step is None:
                del optimizer.step
            else:
                optimizer.step = self._own_step  # type: ignore[method-assign]
            self._original_step = self._own_step = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        self._losses = []  # of the update that follows this rollout

    def add_gradient(self) -> None:
        """Accumulate ``coef * d L / d theta`` of :meth:`replay_loss` into the parameters' grads."""
        if self.coef == 0:
            return
        loss = self.replay_loss()
        if loss is None:
            return
        policy = self.model.policy
        params = [
            p for group in policy.optimizer.param_groups for p in group["params"] if p.requires_grad
        ]
        grads = th.autograd.grad(loss, params, allow_unused=True)
        max_norm = getattr(self.model, "max_grad_norm", None)
        present = [g for g in grads if g is not None]
        if max_norm is not None and present:
            norm = float(th.nn.utils.get_total_norm(present))
            scale = min(1.0, float(max_norm) / (norm + 1e-6))
        else:
            scale = 1.0
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            g = g.detach() * (self.coef * scale)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
        self.last_loss = float(loss.detach())
        self._losses.append(self.last_loss)
        self.logger.record(self.log_key, float(np.mean(self._losses)))  # dumped as train/*

    def state_dict(self) -> dict[str, Any]:
        """The minibatch stream's state, for an exact resume (``agents.resume``)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class SupervisedAnchorCallback(ReplayLossCallback):
    """Add ``coef`` x the behaviour-cloning loss on ``demonstrations`` to every RL step.

    :param demonstrations: ``(obs, actions, masks)`` from :func:`agents.pretrain.demonstrations`.
    :param coef: weight of the cross-entropy against the RL loss (0 switches it off).
    :param batch_size: demonstrations per RL step (sampled with replacement across steps,
        without within one).
    :param seed: seed of the minibatch draws.
    """

    log_key = "anchor/bc_loss"

    def __init__(
        self, demonstrations: Demonstrations, coef: float, batch_size: int = 64, seed: int = 0
    ) -> None:
        obs, actions, masks = demonstrations
        if len(actions) == 0:
            raise ValueError("the supervised anchor needs demonstrations: pass --warm-start N > 0")
        super().__init__(coef, batch_size, seed)
        self.obs, self.actions, self.masks = obs, actions, masks

    def replay_loss(self) -> th.Tensor | None:
        """The behaviour-cloning loss on one minibatch of demonstrations."""
        from agents.pretrain import _logits

        idx = self.rng.choice(
            len(self.actions), min(self.batch_size, len(self.actions)), replace=False
        )
        obs = obs_as_tensor({k: v[idx] for k, v in self.obs.items()}, self.model.device)
        obs = {k: v.float() for k, v in obs.items()}  # type: ignore[union-attr]
        masks = th.as_tensor(self.masks[idx], device=self.model.device)
        actions = th.as_tensor(self.actions[idx], device=self.model.device)
        return th.nn.functional.cross_entropy(_logits(self.model, obs, masks), actions)

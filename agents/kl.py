"""KL control toward a frozen reference policy (Ziegler et al., 2019), as an SB3 callback.

Every rollout, each stored step's reward becomes ``r - coef * (log pi(a|s) - log ref(a|s))``
and the returns / advantages are recomputed. No algorithm is forked: SB3's
``collect_rollouts`` calls ``rollout_buffer.compute_returns_and_advantage`` *before*
``callback.on_rollout_end()`` (PPO, A2C, TRPO, MaskablePPO and REINFORCE alike), and
``train`` only runs after it, so the callback edits ``rollout_buffer.rewards`` and calls
``compute_returns_and_advantage`` again with the value of the observation after the
rollout (recomputed from ``model._last_obs``: MaskablePPO does not refresh the
callback's ``locals`` before ``on_rollout_end``). The monitor's episode returns
(``rollout/ep_rew_mean``) stay the env's own rewards.

``log pi(a|s)`` is ``rollout_buffer.log_probs`` (the behaviour policy, which is the
current policy: the rollout was just collected). ``log ref(a|s)`` costs one extra forward
pass of the reference policy over the rollout. The mean of ``log pi - log ref`` over the
rollout is an unbiased per-step estimate of ``KL(pi || ref)``; it is logged as
``kl/ref_kl`` with ``kl/coef``.

Adaptive coefficient (Ziegler et al. 2019, section 2.2): with ``target_kl`` set,
``e = clip(KL / target_kl - 1, -0.2, 0.2)`` and ``coef *= 1 + e * n / horizon`` where
``n`` is the number of steps in the rollout. Here ``KL`` is the per-step estimate above
(so ``target_kl`` is per step, not per episode as in the paper's text generation, where
an "episode" is a whole sample).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import obs_as_tensor


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller on the KL coefficient.

    :param init_coef: starting coefficient.
    :param target_kl: KL the controller steers toward.
    :param horizon: steps over which a 20 % error changes the coefficient by a factor e^0.2.
    """

    def __init__(self, init_coef: float, target_kl: float, horizon: int) -> None:
        assert target_kl > 0 and horizon > 0, "target_kl and horizon must be positive"
        self.coef, self.target_kl, self.horizon = float(init_coef), float(target_kl), int(horizon)

    def update(self, kl: float, n_steps: int) -> float:
        error = float(np.clip(kl / self.target_kl - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * n_steps / self.horizon
        return self.coef


def frozen_copy(policy: BasePolicy) -> BasePolicy:
    """A detached, eval-mode, ``requires_grad=False`` copy of ``policy``."""
    try:
        ref = copy.deepcopy(policy)
    except Exception:  # noqa: BLE001 - e.g. a torch.compile'd encoder: rebuild and copy weights
        ref = type(policy)(**policy._get_constructor_parameters())
        ref.load_state_dict(policy.state_dict())
        ref.to(policy.device)
    ref.set_training_mode(False)
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


class KLPenaltyCallback(BaseCallback):
    """Penalise the reward by the KL to a frozen reference policy.

    >>> pretrain(model, "lmgym/NER-v0", steps=500)              # doctest: +SKIP
    >>> model.learn(50_000, callback=KLPenaltyCallback(coef=0.05, target_kl=0.02))  # doctest: +SKIP

    :param coef: (initial) KL coefficient.
    :param target_kl: if set, adapt ``coef`` toward this per-step KL; else keep it fixed.
    :param horizon: adaptive controller horizon in env steps.
    :param reference: the reference policy; default a frozen copy of ``model.policy``
        taken when training starts (i.e. the warm-started policy).
    :param batch_size: chunk size of the reference forward pass.
    """

    def __init__(
        self,
        coef: float = 0.1,
        target_kl: float | None = None,
        horizon: int = 10_000,
        reference: BasePolicy | None = None,
        batch_size: int = 256,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.coef = float(coef)
        self.controller = (
            AdaptiveKLController(coef, target_kl, horizon) if target_kl is not None else None
        )
        self.reference = reference
        self.batch_size = batch_size
        self.last_kl = float("nan")
        self.history: list[dict[str, float]] = []
        self._saved_reference: dict[str, th.Tensor] | None = None

    def _on_training_start(self) -> None:
        assert hasattr(self.model, "rollout_buffer"), (
            "KLPenaltyCallback edits the rollout buffer: use an on-policy algorithm "
            "(PPO, A2C, TRPO, MaskablePPO, REINFORCE), not "
            f"{type(self.model).__name__}"
        )
        if self.reference is None:
            self.reference = frozen_copy(self.model.policy)
            if self._saved_reference is not None:  # resumed: the original reference
                self.reference.load_state_dict(self._saved_reference)
                self._saved_reference = None
        self.reference.to(self.model.device)

    def state_dict(self) -> dict[str, Any]:
        """Coefficient and reference weights, for an exact resume (``agents.resume``)."""
        reference = None
        if self.reference is not None:
            reference = {k: v.detach().cpu() for k, v in self.reference.state_dict().items()}
        return {"coef": self.coef, "reference": reference}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])
        if self.controller is not None:
            self.controller.coef = self.coef
        self._saved_reference = state["reference"]

    def _on_step(self) -> bool:
        return True

    def _reference_log_probs(self) -> np.ndarray:
        buffer = self.model.rollout_buffer
        n_steps, n_envs = buffer.buffer_size, buffer.n_envs
        observations: Any = buffer.observations
        actions = buffer.actions.reshape(n_steps * n_envs, -1)
        masks = getattr(buffer, "action_masks", None)
        out = np.zeros(n_steps * n_envs, dtype=np.float32)
        assert self.reference is not None
        with th.no_grad():
            for lo in range(0, n_steps * n_envs, self.batch_size):
                hi = min(lo + self.batch_size, n_steps * n_envs)
                if isinstance(observations, dict):
                    obs = {
                        k: v.reshape(n_steps * n_envs, *v.shape[2:])[lo:hi]
                        for k, v in observations.items()
                    }
                else:
                    obs = observations.reshape(n_steps * n_envs, *observations.shape[2:])[lo:hi]
                obs_t = obs_as_tensor(obs, self.model.device)  # type: ignore[arg-type]
                kwargs: dict[str, Any] = {}
                if masks is not None:
                    kwargs["action_masks"] = masks.reshape(n_steps * n_envs, -1)[lo:hi]
                dist = self.reference.get_distribution(obs_t, **kwargs)  # type: ignore[attr-defined]
                act = th.as_tensor(actions[lo:hi], device=self.model.device)
                act = act.long().flatten() if act.shape[-1] == 1 else act
                out[lo:hi] = dist.log_prob(act).cpu().numpy()
        return out.reshape(n_steps, n_envs)

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        kl = buffer.log_probs - self._reference_log_probs()  # [n_steps, n_envs]
        buffer.rewards = (buffer.rewards - self.coef * kl).astype(np.float32)
        with th.no_grad():
            last_values = self.model.policy.predict_values(
                obs_as_tensor(self.model._last_obs, self.model.device)
            )  # type: ignore[arg-type]
        dones = np.asarray(self.model._last_episode_starts, dtype=np.float32)
        buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)

        self.last_kl = float(kl.mean())
        self.logger.record("kl/ref_kl", self.last_kl)
        self.logger.record("kl/coef", self.coef)
        self.history.append({"kl": self.last_kl, "coef": self.coef})
        if self.controller is not None:
            self.coef = self.controller.update(self.last_kl, kl.size)

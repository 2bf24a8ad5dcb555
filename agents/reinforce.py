"""REINFORCE (Williams, 1992) as an SB3 ``OnPolicyAlgorithm``.

Rollouts, logging, callbacks, ``save``/``load`` and the policies are SB3's; only the
return computation (:class:`MonteCarloRolloutBuffer`) and ``train`` are new.

Returns are Monte-Carlo discounted sums *within the rollout* (``n_steps`` per env).
lmgym episodes are short (1 to ~40 steps), so with ``n_steps`` well above the episode
length almost every episode is complete. An episode cut by the end of the rollout:

* ``baseline=True``: its tail is bootstrapped with the critic's value of the next
  observation (as SB3 does for time-limit truncation), advantage ``G_t - V(s_t)``;
* ``baseline=False``: it is truncated (rewards after the cut are not counted; the
  remaining steps of that episode start the next rollout). This biases those few steps
  toward zero return; use ``n_steps`` >> episode length. With no baseline the policy's
  ``value_net`` is zeroed and frozen, so SB3's time-limit bootstrap adds nothing either.

One gradient step per rollout (the estimator is on-policy: reusing the batch would need
importance ratios, i.e. PPO). ``batch_size`` only splits that step into chunks whose
gradients are accumulated, to bound memory.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from torch.nn import functional as F

from agents.buffers import normalize_within, task_ids
from agents.policies import TransformerPolicy

SelfREINFORCE = TypeVar("SelfREINFORCE", bound="REINFORCE")


def monte_carlo_returns(
    rewards: np.ndarray,
    episode_starts: np.ndarray,
    last_values: np.ndarray,
    dones: np.ndarray,
    gamma: float,
    bootstrap: bool,
) -> np.ndarray:
    """Discounted returns ``[n_steps, n_envs]`` of a rollout.

    :param rewards: ``[n_steps, n_envs]``.
    :param episode_starts: ``[n_steps, n_envs]``, 1 where a step begins a new episode.
    :param last_values: ``[n_envs]`` value of the observation after the last step.
    :param dones: ``[n_envs]`` whether the last step ended its episode.
    :param gamma: discount.
    :param bootstrap: add ``gamma * last_values`` to episodes the rollout cuts off.
    """
    n_steps = rewards.shape[0]
    returns = np.zeros_like(rewards, dtype=np.float32)
    running = (
        last_values * (1.0 - dones) if bootstrap else np.zeros_like(last_values, dtype=np.float32)
    )
    for step in reversed(range(n_steps)):
        if step < n_steps - 1:
            running = running * (1.0 - episode_starts[step + 1])
        running = rewards[step] + gamma * running
        returns[step] = running
    return returns


class _MonteCarloMixin:
    buffer_size: int
    rewards: np.ndarray
    episode_starts: np.ndarray
    values: np.ndarray
    returns: np.ndarray
    advantages: np.ndarray
    gamma: float
    baseline: bool = True

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """Monte-Carlo returns; advantage ``G - V`` (baseline) or ``G``."""
        last = last_values.clone().cpu().numpy().flatten()
        self.returns = monte_carlo_returns(
            self.rewards,
            self.episode_starts,
            last,
            dones.astype(np.float32),
            self.gamma,
            self.baseline,
        )
        self.advantages = self.returns - self.values if self.baseline else self.returns.copy()


class MonteCarloRolloutBuffer(_MonteCarloMixin, RolloutBuffer):
    """``RolloutBuffer`` whose returns are Monte-Carlo (see module doc)."""

    def __init__(self, *args: Any, baseline: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline = baseline


class MonteCarloDictRolloutBuffer(_MonteCarloMixin, DictRolloutBuffer):
    """``DictRolloutBuffer`` whose returns are Monte-Carlo (see module doc)."""

    def __init__(self, *args: Any, baseline: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.baseline = baseline


class REINFORCE(OnPolicyAlgorithm):
    """Monte-Carlo policy gradient with an optional learned baseline.

    >>> model = REINFORCE(TransformerPolicy, env, n_steps=256, baseline=True)  # doctest: +SKIP
    >>> model.learn(10_000)  # doctest: +SKIP

    :param policy: an ``ActorCriticPolicy`` (class or ``"TransformerPolicy"``/``"MlpPolicy"``...).
    :param env: env or id.
    :param learning_rate: learning rate (or schedule).
    :param n_steps: steps per env per rollout (one gradient step each).
    :param batch_size: chunk size for gradient accumulation (``None`` = whole rollout).
    :param gamma: discount.
    :param baseline: learn ``V(s)`` (``value_net``) and use ``G - V`` as advantage.
    :param normalize_advantage: standardise advantages over the rollout (``"task"``: within
        each task of a MultiTask rollout, :func:`agents.buffers.normalize_within`).
    :param ent_coef: entropy bonus.
    :param vf_coef: value-loss weight (baseline only).
    :param max_grad_norm: gradient clipping.
    Remaining arguments as SB3's ``OnPolicyAlgorithm``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "TransformerPolicy": TransformerPolicy,
        "MlpPolicy": ActorCriticPolicy,
        "MultiInputPolicy": ActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        n_steps: int = 256,
        batch_size: int | None = None,
        gamma: float = 1.0,
        baseline: bool = True,
        normalize_advantage: bool | str = False,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 1.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self.baseline = baseline
        self.batch_size = batch_size
        self.normalize_advantage = normalize_advantage
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(
                spaces.Discrete,
                spaces.Box,
                spaces.MultiDiscrete,
                spaces.MultiBinary,
            ),
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        dict_obs = isinstance(self.observation_space, spaces.Dict)
        self.rollout_buffer_class = (
            MonteCarloDictRolloutBuffer if dict_obs else MonteCarloRolloutBuffer
        )
        self.rollout_buffer_kwargs = {**self.rollout_buffer_kwargs, "baseline": self.baseline}
        super()._setup_model()
        if not self.baseline:
            # V == 0 everywhere: no bootstrap anywhere, advantages are the plain returns
            for param in self.policy.value_net.parameters():
                param.data.zero_()
                param.requires_grad_(False)

    def train(self) -> None:
        """One policy-gradient step on the rollout."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer = self.rollout_buffer
        advantages = buffer.advantages
        if self.normalize_advantage == "task":  # within each task of a MultiTask rollout
            advantages = normalize_within(advantages, task_ids(buffer.observations))
        elif self.normalize_advantage and advantages.size > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        buffer.advantages = advantages.astype(np.float32)
        n_total = buffer.buffer_size * buffer.n_envs
        chunk = self.batch_size or n_total

        self.policy.optimizer.zero_grad()
        pg_losses, value_losses, entropies = [], [], []
        for data in buffer.get(chunk):
            actions = (
                data.actions.long().flatten()
                if isinstance(self.action_space, spaces.Discrete)
                else data.actions
            )
            values, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
            weight = len(data.advantages) / n_total
            pg_loss = -(data.advantages * log_prob).mean()
            ent = entropy.mean() if entropy is not None else -log_prob.mean()
            loss = pg_loss - self.ent_coef * ent
            if self.baseline:
                value_loss = F.mse_loss(data.returns, values.flatten())
                loss = loss + self.vf_coef * value_loss
                value_losses.append(value_loss.item())
            (loss * weight).backward()
            pg_losses.append(pg_loss.item())
            entropies.append(ent.item())
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1

        self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses)))
        self.logger.record("train/entropy", float(np.mean(entropies)))
        self.logger.record("train/mean_return", float(buffer.returns.mean()))
        if value_losses:
            self.logger.record("train/value_loss", float(np.mean(value_losses)))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfREINFORCE,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "REINFORCE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfREINFORCE:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

"""Warm start: behaviour cloning on the env's expert actions.

``pretrain(model, env, steps)`` runs the env with teacher forcing (every step takes
``env.unwrapped.expert_action()``, so the policy sees exactly the states the expert
visits) and minimises the cross-entropy of the policy's action distribution against the
expert action, with invalid actions masked (``action_masks()``). For DQN models the
Q-values are read as logits (a common warm start for Q-learning; the target network is
synced afterwards). The model's own optimizer and learning-rate schedule are left alone:
a separate AdamW with ``lr`` is used (heads at the policy's ``head_lr_scale`` times it).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import obs_as_tensor

from agents.heads import NEG
from agents.policies import lr_param_groups, make_optimizer


def _unwrap(env: Any) -> Any:
    return env.unwrapped if hasattr(env, "unwrapped") else env


def _logits(model: BaseAlgorithm, obs: dict[str, th.Tensor], masks: th.Tensor) -> th.Tensor:
    policy = model.policy
    if hasattr(policy, "q_net"):  # DQN
        q = policy.q_net(obs)
        return q.masked_fill(~masks, NEG)
    logits = policy.get_distribution(obs).distribution.logits  # type: ignore[attr-defined]
    return logits.masked_fill(~masks, NEG)


class ExpertStream:
    """Teacher-forced stream of ``(obs, expert action, action mask)`` from ``n_envs`` envs."""

    def __init__(self, env_or_id: Any, n_envs: int = 1, seed: int = 0, **make_kwargs: Any) -> None:
        if isinstance(env_or_id, str):
            self.envs = [gym.make(env_or_id, **make_kwargs) for _ in range(n_envs)]
        else:
            self.envs = [env_or_id]
        self.obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        self.episodes = 0

    def sample(self, n: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        obs_list, actions, masks = [], [], []
        i = 0
        while len(actions) < n:
            k = i % len(self.envs)
            env, base = self.envs[k], _unwrap(self.envs[k])
            action = int(base.expert_action())
            obs_list.append(self.obs[k])
            actions.append(action)
            masks.append(np.asarray(base.action_masks(), dtype=bool))
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
                self.episodes += 1
            self.obs[k] = obs
            i += 1
        batch = {key: np.stack([o[key] for o in obs_list]) for key in obs_list[0]}
        return batch, np.array(actions, dtype=np.int64), np.stack(masks)


def demonstrations(
    env_or_id: Any, n: int, seed: int = 0, n_envs: int = 4, **make_kwargs: Any
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``n`` teacher-forced ``(obs, expert action, action mask)``: the labelled set that
    :func:`pretrain` with ``epochs > 1``, the same ``seed`` and ``n_envs`` trains on (the
    supervised anchor, :mod:`agents.anchor`, replays it)."""
    return ExpertStream(env_or_id, n_envs=n_envs, seed=seed, **make_kwargs).sample(n)


def pretrain(
    model: BaseAlgorithm,
    env_or_id: Any,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-4,
    n_envs: int = 4,
    seed: int = 0,
    max_grad_norm: float = 1.0,
    log_interval: int = 0,
    epochs: int = 1,
    **make_kwargs: Any,
) -> dict[str, Any]:
    """Behaviour-clone the expert into ``model``'s policy.

    :param model: an SB3 model built on the ``agents`` policies (PPO, A2C, TRPO,
        MaskablePPO, REINFORCE, DQN).
    :param env_or_id: a lmgym env (anything with ``expert_action()`` / ``action_masks()``
        on ``.unwrapped``) or an env id made with ``make_kwargs`` (``split="train"`` by default).
    :param steps: gradient steps per epoch; ``steps * batch_size`` expert transitions in all.
    :param batch_size: expert transitions per step.
    :param epochs: passes over the data. 1 (the default) streams fresh transitions for
        every step; more collects the ``steps * batch_size`` transitions once and makes
        ``epochs`` shuffled passes over them (supervised fine-tuning on a fixed labelled
        budget, as PPO reuses a rollout for ``n_epochs``); ``steps * epochs`` updates.
    :param lr: AdamW learning rate.
    :param n_envs: envs stepped round-robin when an id is given (decorrelates a batch).
    :param seed: reset seed of the envs.
    :param max_grad_norm: gradient clipping.
    :param log_interval: record ``pretrain/*`` in the model's logger every so many steps (0 = never).
    :return: ``{"loss": [...], "accuracy": [...], "initial_accuracy", "final_accuracy",
        "final_loss", "episodes", "samples", "updates"}``; accuracy is the greedy action's agreement
        with the expert on each batch, measured before that batch's update
        (``initial_accuracy``: the first batch, i.e. the untrained policy; ``final_*``: mean
        of the last ``min(20, steps // 5)`` batches).
    """
    stream = ExpertStream(env_or_id, n_envs=n_envs, seed=seed, **make_kwargs)
    policy = model.policy
    params = [p for p in policy.parameters() if p.requires_grad]
    groups = lr_param_groups(policy, getattr(policy, "head_lr_scale", 1.0), trainable_only=True)
    optimizer = make_optimizer(th.optim.AdamW, groups, lr, {})
    losses: list[float] = []
    accuracies: list[float] = []
    policy.set_training_mode(True)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    for step, (obs_np, actions_np, masks_np) in enumerate(
        _batches(stream, steps, batch_size, epochs, seed)
    ):
        obs = obs_as_tensor(obs_np, model.device)
        obs = {k: v.float() for k, v in obs.items()}  # type: ignore[union-attr]
        actions = th.as_tensor(actions_np, device=model.device)
        masks = th.as_tensor(masks_np, device=model.device)
        logits = _logits(model, obs, masks)
        loss = th.nn.functional.cross_entropy(logits, actions)
        optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(float(loss.item()))
        accuracies.append(float((logits.argmax(1) == actions).float().mean().item()))
        if (
            log_interval
            and (step + 1) % log_interval == 0
            and getattr(model, "_logger", None) is not None
        ):
            model.logger.record("pretrain/loss", float(np.mean(losses[-log_interval:])))
            model.logger.record("pretrain/accuracy", float(np.mean(accuracies[-log_interval:])))
            model.logger.dump(step=step + 1)
    policy.set_training_mode(False)
    if hasattr(policy, "q_net_target"):
        policy.q_net_target.load_state_dict(policy.q_net.state_dict())
    window = max(1, min(20, len(losses) // 5))
    return {
        "loss": losses,
        "accuracy": accuracies,
        "initial_accuracy": accuracies[0] if accuracies else float("nan"),
        "final_accuracy": float(np.mean(accuracies[-window:])) if accuracies else float("nan"),
        "final_loss": float(np.mean(losses[-window:])) if losses else float("nan"),
        "episodes": stream.episodes,
        "samples": steps * batch_size,
        "updates": steps * epochs,
    }


def _batches(stream: ExpertStream, steps: int, batch_size: int, epochs: int, seed: int) -> Any:
    """``steps * epochs`` minibatches: streamed (one epoch) or shuffled passes over a fixed set."""
    if epochs == 1:
        for _ in range(steps):
            yield stream.sample(batch_size)
        return
    obs, actions, masks = stream.sample(steps * batch_size)  # = demonstrations(...)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(actions))
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield {k: v[idx] for k, v in obs.items()}, actions[idx], masks[idx]

"""Single-file PPO on an lmgym env, CleanRL style (``cleanrl/ppo.py``), in plain torch.

Run: ``python -m agents.cleanrl_ppo --env-id lmgym/SST2-v0 --data-dir sample --total-timesteps 20000``
(``--help`` lists every flag; each comes from a field of :class:`Args` and its docstring).

Reads top to bottom: arguments, the policy, setup, then the rollout/update loop. It trains
on lmgym's native vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``)
in ``SameStep`` autoreset mode, so the classic CleanRL loop is exact: a ``done`` step's
observation is already the next episode's first one (lmgym episodes only terminate, never
truncate, so no ``final_obs`` bootstrap is needed). The policy embeds ``input_ids``, mean-pools
(or runs a GRU) over ``attention_mask``, adds the token at ``position`` and the last chosen
tag for NER and the written target for translation, and puts an MLP head over the actions;
invalid actions (``action_mask == 0``) get zero probability. Pointer tasks (QA) run but a
flat head over positions learns slowly there: use ``agents/`` policies for those.

Logs (stdout, ``runs/<run>/metrics.jsonl``, TensorBoard if installed) use CleanRL's names:
``charts/episodic_return``, ``charts/episodic_length``, ``charts/<episode metric>`` (the
env's ``info["episode_metrics"]``: accuracy, entity_f1, bleu, ...), ``losses/*``, ``charts/SPS``.
Run name: ``<env>__cleanrl_ppo__<seed>__<unix time>`` (``/`` in the env id becomes ``-``).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical

import lmgym  # noqa: F401  (registers the ids)


@dataclass
class Args:
    exp_name: str = "cleanrl_ppo"
    """the name of this experiment (the middle of the run name)"""
    env_id: str = "lmgym/SST2-v0"
    """the id of the environment"""
    data_dir: str | None = "sample"
    """data folder passed to gym.make ('sample' = the bundled sample; None = $LMGYM_DATA_DIR)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, cuda will be used when available"""
    threads: int = 1
    """torch CPU threads"""
    log_dir: str = "runs"
    """folder holding one sub-folder per run"""

    # Algorithm specific arguments
    total_timesteps: int = 20000
    """total timesteps of the experiments"""
    learning_rate: float = 1e-3
    """the learning rate of the optimizer"""
    num_envs: int = 16
    """the number of parallel episodes (slots of the native vector env)"""
    num_steps: int = 32
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function"""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # Policy
    encoder: Literal["meanpool", "gru"] = "meanpool"
    """text encoder: mean of token embeddings, or a GRU over them"""
    embed_dim: int = 64
    """token embedding size"""
    hidden_dim: int = 64
    """width of the MLP heads"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """Text encoder + actor and critic heads over the lmgym ``Dict`` observation."""

    def __init__(self, obs_space: gym.spaces.Dict, n_actions: int, args: Args) -> None:
        super().__init__()
        spaces = obs_space.spaces
        vocab = int(spaces["input_ids"].high.max()) + 1
        self.embed = nn.Embedding(vocab, args.embed_dim)
        self.gru = (
            nn.GRU(args.embed_dim, args.embed_dim, batch_first=True)
            if args.encoder == "gru"
            else None
        )
        width = args.embed_dim
        self.has_position = "position" in spaces
        if self.has_position:  # NER: the word being tagged and the tag before it
            self.tag_embed = nn.Embedding(int(spaces["prev_tags"].high.max()) + 2, args.embed_dim)
            width += 2 * args.embed_dim
        self.has_target = "target_ids" in spaces
        if self.has_target:  # translation: what has been written so far
            self.target_embed = nn.Embedding(
                int(spaces["target_ids"].high.max()) + 1, args.embed_dim
            )
            width += 2 * args.embed_dim
        self.torso = nn.Sequential(layer_init(nn.Linear(width, args.hidden_dim)), nn.Tanh())
        self.actor = layer_init(nn.Linear(args.hidden_dim, n_actions), std=0.01)
        self.critic = nn.Sequential(
            layer_init(nn.Linear(width, args.hidden_dim)),
            nn.Tanh(),
            layer_init(nn.Linear(args.hidden_dim, 1), std=1.0),
        )

    def features(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = obs["input_ids"].long()
        mask = obs["attention_mask"].float().unsqueeze(-1)
        tokens = self.embed(ids)
        if self.gru is not None:
            tokens, _ = self.gru(tokens)
        parts = [(tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)]
        if self.has_position:
            position = obs["position"].long()  # [B, 1]
            parts.append(
                tokens.gather(1, position.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])).squeeze(1)
            )
            prev = obs["prev_tags"].long()
            t = (prev >= 0).sum(1, keepdim=True)
            last = torch.where(t > 0, prev.gather(1, (t - 1).clamp(min=0)), torch.full_like(t, -1))
            parts.append(self.tag_embed(last.squeeze(1) + 1))
        if self.has_target:
            target = self.target_embed(obs["target_ids"].long())
            tmask = obs["target_mask"].float().unsqueeze(-1)
            parts.append((target * tmask).sum(1) / tmask.sum(1).clamp(min=1.0))
            n = obs["target_mask"].long().sum(1, keepdim=True)
            parts.append(
                target.gather(
                    1, (n - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, target.shape[-1])
                ).squeeze(1)
            )
        return torch.cat(parts, dim=-1)

    def get_value(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.critic(self.features(obs))

    def get_action_and_value(
        self, obs: dict[str, torch.Tensor], action: torch.Tensor | None = None
    ):
        hidden = self.features(obs)
        logits = self.actor(self.torso(hidden))
        # Masked actions get probability 0 (a large negative logit keeps the entropy finite).
        logits = torch.where(obs["action_mask"].bool(), logits, torch.finfo(logits.dtype).min)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def to_tensors(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, device=device) for k, v in obs.items()}


def main(args: Args) -> dict[str, float]:
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = max(1, args.total_timesteps // args.batch_size)
    run_name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = Path(args.log_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
    log_file = open(run_dir / "metrics.jsonl", "w")
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir))
    except ImportError:  # tensorboard is optional: metrics.jsonl has everything
        writer = None

    def log(name: str, value: float, step: int) -> None:
        log_file.write(json.dumps({"name": name, "value": float(value), "step": step}) + "\n")
        if writer is not None:
            writer.add_scalar(name, value, step)

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)  # minibatch order (no global numpy seeding)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup: lmgym's native vector env, SameStep autoreset (see the module docstring)
    make_kwargs = {} if args.data_dir is None else {"data_dir": args.data_dir}
    envs = gym.make_vec(
        args.env_id, num_envs=args.num_envs, vectorization_mode="vector_entry_point",
        autoreset_mode="SameStep", **make_kwargs,
    )  # fmt: skip
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), (
        "only discrete action space is supported"
    )

    agent = Agent(envs.single_observation_space, int(envs.single_action_space.n), args).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # ALGO Logic: Storage setup
    obs = {
        k: torch.zeros(
            (args.num_steps, args.num_envs, *space.shape), dtype=torch.int64, device=device
        )
        for k, space in envs.single_observation_space.spaces.items()
    }
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.int64, device=device)
    logprobs = torch.zeros((args.num_steps, args.num_envs), device=device)
    rewards = torch.zeros((args.num_steps, args.num_envs), device=device)
    dones = torch.zeros((args.num_steps, args.num_envs), device=device)
    values = torch.zeros((args.num_steps, args.num_envs), device=device)

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs_np, _ = envs.reset(seed=args.seed)
    next_obs = to_tensors(next_obs_np, device)
    next_done = torch.zeros(args.num_envs, device=device)
    returns: list[float] = []
    metrics: dict[str, list[float]] = {}

    for iteration in range(1, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            for k in obs:
                obs[k][step] = next_obs[k]
            dones[step] = next_done

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs_np, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done_np = np.logical_or(terminations, truncations)
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            next_obs = to_tensors(next_obs_np, device)
            next_done = torch.as_tensor(next_done_np, dtype=torch.float32, device=device)

            if "episode" in infos:
                finished = infos["_episode"]
                for r, length in zip(
                    infos["episode"]["r"][finished], infos["episode"]["l"][finished], strict=True
                ):
                    returns.append(float(r))
                    log("charts/episodic_return", r, global_step)
                    log("charts/episodic_length", length, global_step)
            episode_metrics = infos.get("final_info", {}).get("episode_metrics", {})
            for name, column in episode_metrics.items():
                if not name.startswith("_"):
                    for value_ in column[episode_metrics[f"_{name}"]]:
                        metrics.setdefault(name, []).append(float(value_))
                        log(f"charts/{name}", value_, global_step)

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards, device=device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = (
                    delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                )
            returns_ = advantages + values

        # flatten the batch
        b_obs = {k: v.reshape((-1, *v.shape[2:])) for k, v in obs.items()}
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns_.reshape(-1)
        b_values = values.reshape(-1)

        # Optimizing the policy and value network
        b_inds = np.arange(args.batch_size)
        clipfracs = []
        for _epoch in range(args.update_epochs):
            rng.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    {k: v[mb_inds] for k, v in b_obs.items()}, b_actions[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (
                        mb_advantages.std() + 1e-8
                    )

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(
                    ratio, 1 - args.clip_coef, 1 + args.clip_coef
                )
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        log("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        log("losses/value_loss", v_loss.item(), global_step)
        log("losses/policy_loss", pg_loss.item(), global_step)
        log("losses/entropy", entropy_loss.item(), global_step)
        log("losses/old_approx_kl", old_approx_kl.item(), global_step)
        log("losses/approx_kl", approx_kl.item(), global_step)
        log("losses/clipfrac", np.mean(clipfracs), global_step)
        log("losses/explained_variance", explained_var, global_step)
        sps = int(global_step / (time.time() - start_time))
        log("charts/SPS", sps, global_step)
        recent = returns[-100:]
        print(
            f"iteration={iteration} global_step={global_step} SPS={sps} "
            f"episodic_return={np.mean(recent) if recent else float('nan'):.3f} "
            + " ".join(f"{k}={np.mean(v[-100:]):.3f}" for k, v in metrics.items())
        )

    envs.close()
    log_file.close()
    if writer is not None:
        writer.close()
    summary = {"run_dir": str(run_dir), "global_step": global_step, "episodes": len(returns)}
    summary["final_return"] = float(np.mean(returns[-100:])) if returns else float("nan")
    summary.update({k: float(np.mean(v[-100:])) for k, v in metrics.items()})
    torch.save(agent.state_dict(), run_dir / "agent.pt")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(tyro.cli(Args))

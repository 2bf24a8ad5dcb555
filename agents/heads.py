"""Task-shaped heads over the encoder's per-token hidden states.

The head family is read off the observation keys (``docs/ARCHITECTURE.md``):

| keys | family | actor head | action |
|---|---|---|---|
| ``task_id`` | multitask | per-task adapter + the task's family head, padded to ``max_actions`` | any |
| ``choice_positions`` | ``multiple_choice`` | pointer over the option positions | option index |
| ``stage`` + ``start`` | ``qa`` | pointer over positions; the end head is conditioned on the chosen start | position |
| ``target_ids`` | ``translation`` | causal transformer decoder over the written prefix, cross-attending to the encoder | target token |
| ``position`` | ``ner`` | label head on the hidden state at ``position`` + embedding of the previous tag | tag |
| (none) | ``classification`` | label head on token 0 | label |

:class:`TaskHeads` is installed as the policy's ``mlp_extractor``: ``forward_actor``
returns the action *logits* (so the policy's ``action_net`` is the identity) and
``forward_critic`` the critic's features, ``value_net``'s input (SB3 calls their widths
``latent_dim_pi``/``latent_dim_vf``). Every critic-only module is named
``value_*`` (TRPO splits actor and critic parameters by that name); the actor heads never
feed the critic, so with ``share_features_extractor=False`` the two are fully separate.

Invalid actions get the logit :data:`NEG` (the value sb3-contrib's masked distribution
uses): structural ones always (padding positions, padded options, actions beyond a task's
label set in multitask) and, with ``use_obs_action_mask=True``, the env's ``action_mask``
observation, so plain PPO/A2C/TRPO/REINFORCE sample only valid actions too. The mask is
part of the observation, hence stored in the rollout buffer and applied identically when
log-probabilities are re-evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch as th
from gymnasium import spaces
from torch import nn

from agents.extractor import FeatureLayout, attention_context

NEG = -1e8
FAMILIES = ("ner", "classification", "qa", "translation", "multiple_choice")


def as_flag(x: th.Tensor) -> th.Tensor:
    """A 0/1 observation entry (mask, stage) as ``bool``.

    The extractor packs integer observations into one float feature tensor; integers are
    exact there, so ``x > 0.5`` reads 1 as ``True`` and 0 as ``False`` whatever the float
    dtype. Every flag of the heads goes through here.
    """
    return x > 0.5


def infer_family(observation_space: spaces.Dict) -> str:
    """Head family from the observation keys (``"multitask"`` when ``task_id`` is present).

    The fallback for envs that do not say their family (``env.unwrapped.family``, passed
    as the ``family`` policy kwarg by :func:`agents.policies.env_policy_kwargs`) and for
    checkpoints saved before the kwarg existed.
    """
    keys = set(observation_space.spaces)
    if "task_id" in keys:
        return "multitask"
    if "choice_positions" in keys:
        return "multiple_choice"
    if "stage" in keys and "start" in keys:
        return "qa"
    if "target_ids" in keys:
        return "translation"
    if "position" in keys:
        return "ner"
    return "classification"


def mlp(
    in_dim: int,
    arch: Sequence[int],
    out_dim: int,
    activation_fn: type[nn.Module],
    small_out: bool = True,
) -> nn.Sequential:
    """``in -> arch... -> out`` with ``activation_fn`` between; small last layer (near-uniform start)."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in arch:
        layers += [nn.Linear(last, width), activation_fn()]
        last = width
    out = nn.Linear(last, out_dim)
    if small_out:
        nn.init.normal_(out.weight, std=0.01)
        nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


def gather_tokens(hidden: th.Tensor, positions: th.Tensor) -> th.Tensor:
    """``hidden[b, positions[b, k]]`` -> ``[B, K, D]`` (positions clamped into range)."""
    pos = positions.long().clamp(0, hidden.shape[1] - 1)
    return th.gather(hidden, 1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def masked_mean(hidden: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Mean of ``hidden [B, L, D]`` over positions where ``mask [B, L]`` is set."""
    weights = as_flag(mask).to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class ClassificationHead(nn.Module):
    """Labels from the first token's hidden state (``[CLS]``)."""

    def __init__(
        self, hidden_size: int, n_out: int, arch: Sequence[int], activation_fn: type[nn.Module]
    ) -> None:
        super().__init__()
        self.n_out = n_out
        self.net = mlp(hidden_size, arch, n_out, activation_fn)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        return self.net(hidden[:, 0])


class TaggingHead(nn.Module):
    """NER tags from the hidden state at ``position`` plus the previous word's tag.

    The previous tag is ``prev_tags[n - 1]`` where ``n`` counts the tags chosen so far
    (``-1`` = not yet); a dedicated "none" embedding stands for the sentence start. It
    lets the head learn BIO transitions (``I-X`` follows ``B-X``/``I-X``).
    """

    def __init__(
        self, hidden_size: int, n_out: int, arch: Sequence[int], activation_fn: type[nn.Module]
    ) -> None:
        super().__init__()
        self.n_out = n_out
        self.tag_embedding = nn.Embedding(n_out + 1, hidden_size)
        nn.init.normal_(self.tag_embedding.weight, std=0.02)
        self.net = mlp(hidden_size, arch, n_out, activation_fn)

    def previous_tag(self, prev_tags: th.Tensor) -> th.Tensor:
        prev = prev_tags.long()
        n_done = (prev >= 0).sum(1)
        last = prev.gather(1, (n_done - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        last = th.where(n_done > 0, last, th.full_like(last, self.n_out))
        return last.clamp(0, self.n_out)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        query = gather_tokens(hidden, obs["position"][:, :1]).squeeze(1)
        if "prev_tags" in obs:
            query = query + self.tag_embedding(self.previous_tag(obs["prev_tags"]))
        return self.net(query)


class SpanHead(nn.Module):
    """Extractive QA pointer: start logits per token, then end logits conditioned on the start.

    ``start_i = s(h_i)``; ``end_i = e(h_i) + <W_q h_start, W_k h_i> / sqrt(D)``; the
    ``stage`` observation picks which row of logits is the action distribution. Padding
    positions (``attention_mask == 0``) are invalid.
    """

    def __init__(
        self, hidden_size: int, seq_len: int, arch: Sequence[int], activation_fn: type[nn.Module]
    ) -> None:
        super().__init__()
        self.n_out = seq_len
        self.start_scorer = mlp(hidden_size, arch, 1, activation_fn)
        self.end_scorer = mlp(hidden_size, arch, 1, activation_fn)
        self.end_query = nn.Linear(hidden_size, hidden_size)
        self.end_key = nn.Linear(hidden_size, hidden_size)
        nn.init.normal_(self.end_query.weight, std=0.01)
        self.scale = 1.0 / math.sqrt(hidden_size)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        start_logits = self.start_scorer(hidden).squeeze(-1)
        h_start = gather_tokens(hidden, obs["start"][:, :1].clamp(min=0)).squeeze(1)
        bilinear = (
            th.einsum("bd,bld->bl", self.end_query(h_start), self.end_key(hidden)) * self.scale
        )
        end_logits = self.end_scorer(hidden).squeeze(-1) + bilinear
        logits = th.where(as_flag(obs["stage"][:, :1]), end_logits, start_logits)
        if "attention_mask" in obs:
            logits = logits.masked_fill(~as_flag(obs["attention_mask"]), NEG)
        return logits


class ChoiceHead(nn.Module):
    """Multiple choice: score each option's first token, conditioned on ``[CLS]``."""

    def __init__(
        self, hidden_size: int, n_choices: int, arch: Sequence[int], activation_fn: type[nn.Module]
    ) -> None:
        super().__init__()
        self.n_out = n_choices
        self.scorer = mlp(hidden_size, arch, 1, activation_fn)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        nn.init.normal_(self.query.weight, std=0.01)
        self.scale = 1.0 / math.sqrt(hidden_size)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        positions = obs["choice_positions"]
        options = gather_tokens(hidden, positions.clamp(min=0))
        bilinear = th.einsum("bd,bcd->bc", self.query(hidden[:, 0]), self.key(options)) * self.scale
        logits = self.scorer(options).squeeze(-1) + bilinear
        return logits.masked_fill(positions < -0.5, NEG)


class DecoderHead(nn.Module):
    """Translation: a small causal transformer decoder over the target prefix.

    Input ``[BOS, t_0 .. t_{n-1}]`` (``n`` = ``target_mask.sum()``), learned positions,
    ``decoder_layers`` pre-norm layers with self-attention (causal + padding mask) and
    cross-attention to the encoder states (source padding masked); the output at index
    ``n`` (the last written position) gives logits over the target vocabulary. The
    sequence is cut to the batch's longest prefix, so early steps are cheap; each env step
    recomputes the prefix (SB3 policies are stateless), O(T^2) in the target length but
    with 1 layer of width D that is small next to the encoder.
    """

    def __init__(
        self,
        hidden_size: int,
        n_out: int,
        target_vocab: int,
        max_target_length: int,
        num_heads: int,
        num_layers: int,
        arch: Sequence[int],
        activation_fn: type[nn.Module],
    ) -> None:
        super().__init__()
        self.n_out = n_out
        self.bos = max(target_vocab, n_out)
        self.token_embedding = nn.Embedding(self.bos + 1, hidden_size)
        self.position_embedding = nn.Embedding(max_target_length + 1, hidden_size)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        layer = nn.TransformerDecoderLayer(
            d_model=hidden_size,
            nhead=num_heads,
            dim_feedforward=2 * hidden_size,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=num_layers)
        self.norm = nn.LayerNorm(hidden_size)
        self.out = mlp(hidden_size, arch, n_out, activation_fn)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        target_mask = as_flag(obs["target_mask"])
        n_written = target_mask.sum(1).long()  # [B]
        length = int(n_written.max()) + 1 if n_written.numel() else 1
        tokens = obs["target_ids"].long().clamp(0, self.bos - 1)[:, : length - 1]
        bos = th.full_like(n_written, self.bos).unsqueeze(1)
        tokens = th.cat([bos, tokens], dim=1)  # [B, length]
        positions = th.arange(length, device=hidden.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        pad = th.cat([th.zeros_like(bos, dtype=th.bool), ~target_mask[:, : length - 1]], dim=1)
        causal = nn.Transformer.generate_square_subsequent_mask(
            length, device=hidden.device, dtype=th.bool
        )
        memory_pad = ~as_flag(obs["attention_mask"]) if "attention_mask" in obs else None
        y = self.decoder(
            x, hidden, tgt_mask=causal, tgt_key_padding_mask=pad, memory_key_padding_mask=memory_pad
        )
        last = gather_tokens(self.norm(y), n_written.unsqueeze(1)).squeeze(1)
        return self.out(last)


class Adapter(nn.Module):
    """Bottleneck residual adapter (Houlsby et al., 2019); starts as the identity."""

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: th.Tensor) -> th.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(self.norm(hidden))))


def build_family_head(
    family: str,
    layout: FeatureLayout,
    observation_space: spaces.Dict,
    n_out: int,
    arch: Sequence[int],
    activation_fn: type[nn.Module],
    num_heads: int,
    decoder_layers: int,
) -> nn.Module:
    """One head of ``family`` with ``n_out`` label/vocabulary outputs (pointer heads size themselves)."""
    keys = observation_space.spaces
    need = {"ner": ("position",), "qa": ("stage", "start"), "translation": ("target_ids", "target_mask"),
            "multiple_choice": ("choice_positions",), "classification": ()}[family]  # fmt: skip
    missing = [key for key in need if key not in keys]
    assert not missing, f"a {family!r} head needs observation keys {missing}; got {sorted(keys)}"
    d = layout.hidden_size
    if family == "classification":
        return ClassificationHead(d, n_out, arch, activation_fn)
    if family == "ner":
        return TaggingHead(d, n_out, arch, activation_fn)
    if family == "qa":
        return SpanHead(d, layout.seq_len, arch, activation_fn)
    if family == "multiple_choice":
        return ChoiceHead(d, int(keys["choice_positions"].shape[0]), arch, activation_fn)
    if family == "translation":
        target = keys["target_ids"]
        return DecoderHead(
            d,
            n_out,
            target_vocab=int(target.high.max()) + 1,
            max_target_length=int(target.shape[0]),
            num_heads=num_heads,
            num_layers=decoder_layers,
            arch=arch,
            activation_fn=activation_fn,
        )
    raise ValueError(f"unknown head family {family!r}; choose one of {FAMILIES}")


class MultiTaskHead(nn.Module):
    """Task-conditioned heads over a shared encoder: ``task_id`` -> adapter -> family head.

    :param task_families: family of each task id (``task_families[task_id]``).
    :param task_n_actions: label/vocabulary size of each task (defaults to ``max_actions``;
        pointer heads size themselves). Logits past a task's size are :data:`NEG`.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        observation_space: spaces.Dict,
        max_actions: int,
        task_families: Sequence[str],
        task_n_actions: Sequence[int] | None,
        adapter_dim: int,
        arch: Sequence[int],
        activation_fn: type[nn.Module],
        num_heads: int,
        decoder_layers: int,
    ) -> None:
        super().__init__()
        n_tasks = int(observation_space["task_id"].high.max()) + 1
        assert task_families is not None and len(task_families) >= n_tasks, (
            f"a multitask env has {n_tasks} task ids: pass policy_kwargs=dict(task_families=[...]) "
            f"naming the family of each ({', '.join(FAMILIES)}), e.g. from env.unwrapped.task_families"
        )
        sizes = (
            list(task_n_actions)
            if task_n_actions is not None
            else [max_actions] * len(task_families)
        )
        self.n_out = max_actions
        self.task_families = list(task_families)
        self.adapters = nn.ModuleList(
            Adapter(layout.hidden_size, adapter_dim) for _ in task_families
        )
        heads = []
        for family, size in zip(task_families, sizes, strict=True):
            head = build_family_head(
                family,
                layout,
                observation_space,
                size,
                arch,
                activation_fn,
                num_heads,
                decoder_layers,
            )
            assert head.n_out <= max_actions, (
                f"a {family!r} head has {head.n_out} actions but the multitask action space "
                f"only {max_actions}"
            )
            heads.append(head)
        self.heads = nn.ModuleList(heads)

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        task = obs["task_id"][:, 0].long()
        out = hidden.new_full((hidden.shape[0], self.n_out), NEG)
        for t, (adapter, head) in enumerate(zip(self.adapters, self.heads, strict=True)):
            rows = (task == t).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            sub = {key: value.index_select(0, rows) for key, value in obs.items()}
            logits = head(adapter(hidden.index_select(0, rows)), sub)
            logits = nn.functional.pad(logits, (0, self.n_out - logits.shape[1]), value=NEG)
            out = out.index_copy(0, rows, logits)
        return out


class ValuePool(nn.Module):
    """Critic summary of a state: ``[CLS; mean over tokens; task focus]`` (3 * D).

    The focus sums what the observation says the step is about: the token at ``position``
    (NER), the chosen start (QA, stage 1), the options (multiple choice), a bag of the
    written target tokens plus progress (translation), a task embedding (multitask). Its
    own embeddings are ``value_*`` modules, disjoint from the actor heads.
    """

    def __init__(self, observation_space: spaces.Dict, hidden_size: int) -> None:
        super().__init__()
        keys = observation_space.spaces
        self.value_target_embedding: nn.Embedding | None = None
        self.value_progress_embedding: nn.Embedding | None = None
        self.value_task_embedding: nn.Embedding | None = None
        if "target_ids" in keys:
            target = keys["target_ids"]
            self.value_target_embedding = nn.Embedding(int(target.high.max()) + 1, hidden_size)
            self.value_progress_embedding = nn.Embedding(int(target.shape[0]) + 1, hidden_size)
        if "task_id" in keys:
            self.value_task_embedding = nn.Embedding(
                int(keys["task_id"].high.max()) + 1, hidden_size
            )
        self.output_dim = 3 * hidden_size

    def forward(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        mask = obs.get("attention_mask")
        mean = masked_mean(hidden, mask) if mask is not None else hidden.mean(1)
        focus = th.zeros_like(mean)
        if "position" in obs:
            focus = focus + gather_tokens(hidden, obs["position"][:, :1]).squeeze(1)
        if "stage" in obs and "start" in obs:
            h_start = gather_tokens(hidden, obs["start"][:, :1].clamp(min=0)).squeeze(1)
            focus = focus + h_start * as_flag(obs["stage"][:, :1]).to(hidden.dtype)
        if "choice_positions" in obs:
            positions = obs["choice_positions"]
            options = gather_tokens(hidden, positions.clamp(min=0))
            valid = (positions > -0.5).to(hidden.dtype).unsqueeze(-1)  # -1: padding
            focus = focus + (options * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        if self.value_target_embedding is not None and self.value_progress_embedding is not None:
            written = as_flag(obs["target_mask"])
            tokens = (
                obs["target_ids"].long().clamp(0, self.value_target_embedding.num_embeddings - 1)
            )
            focus = focus + masked_mean(self.value_target_embedding(tokens), written.float())
            n = written.sum(1).long().clamp(max=self.value_progress_embedding.num_embeddings - 1)
            focus = focus + self.value_progress_embedding(n)
        if self.value_task_embedding is not None:
            task = (
                obs["task_id"][:, 0].long().clamp(0, self.value_task_embedding.num_embeddings - 1)
            )
            focus = focus + self.value_task_embedding(task)
        return th.cat([hidden[:, 0], mean, focus], dim=1)


class TaskHeads(nn.Module):
    """The policy's ``mlp_extractor``: actor logits and critic features from packed features.

    :param layout: how the extractor packed hidden states and observation entries.
    :param observation_space: the env's ``Dict`` space (decides the head family).
    :param n_actions: size of the ``Discrete`` action space.
    :param pi_arch: hidden widths of the actor's label / scorer MLPs.
    :param vf_arch: hidden widths of the critic MLP (``value_mlp``) after :class:`ValuePool`.
    :param activation_fn: activation of both MLPs.
    :param num_heads: attention heads of the translation decoder.
    :param decoder_layers: layers of the translation decoder.
    :param task_families: multitask only, family of each task id.
    :param task_n_actions: multitask only, label size of each task.
    :param family: the env's task family (``env.unwrapped.family``); ``None`` reads it off
        the observation keys (:func:`infer_family`).
    :param adapter_dim: multitask only, adapter bottleneck width.
    :param use_obs_action_mask: give the logit :data:`NEG` to actions the observation's
        ``action_mask`` marks invalid.
    :param with_critic: build the critic (``False`` for DQN's Q-network).
    :param attention_backend: attention kernels of the translation decoder
        (:func:`~agents.extractor.attention_context`; ``None`` = auto).
    :param critic_encoder_grad: let the value loss train the shared encoder. ``False``
        detaches the hidden states the critic reads, so only the policy loss shapes the
        encoder (the critic still learns its own ``value_*`` layers); this matters with a
        shared extractor, where the value loss otherwise swamps the policy gradient.
    """

    def __init__(
        self,
        layout: FeatureLayout,
        observation_space: spaces.Dict,
        n_actions: int,
        pi_arch: Sequence[int] = (256,),
        vf_arch: Sequence[int] = (256,),
        activation_fn: type[nn.Module] = nn.Tanh,
        num_heads: int = 2,
        decoder_layers: int = 1,
        task_families: Sequence[str] | None = None,
        task_n_actions: Sequence[int] | None = None,
        adapter_dim: int = 64,
        use_obs_action_mask: bool = True,
        with_critic: bool = True,
        attention_backend: str | None = None,
        critic_encoder_grad: bool = True,
        family: str | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.critic_encoder_grad = critic_encoder_grad
        self.attention_backend = attention_backend
        if family is not None and family not in (*FAMILIES, "multitask"):
            raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES} or 'multitask'")
        self.family = family if family is not None else infer_family(observation_space)
        self.use_obs_action_mask = use_obs_action_mask and "action_mask" in observation_space.spaces
        if self.use_obs_action_mask:
            mask_size = int(observation_space["action_mask"].shape[0])
            assert mask_size == n_actions, (
                f"action_mask has {mask_size} entries but the action space {n_actions}: "
                "pass use_obs_action_mask=False or fix the env"
            )
        if self.family == "multitask":
            self.actor: nn.Module = MultiTaskHead(
                layout, observation_space, n_actions, task_families or [], task_n_actions,
                adapter_dim, pi_arch, activation_fn, num_heads, decoder_layers,
            )  # fmt: skip
        else:
            self.actor = build_family_head(
                self.family,
                layout,
                observation_space,
                n_actions,
                pi_arch,
                activation_fn,
                num_heads,
                decoder_layers,
            )
        assert self.actor.n_out == n_actions, (
            f"the {self.family!r} head has {self.actor.n_out} outputs but the action space has "
            f"{n_actions} actions (pointer heads need Discrete(max_length) / Discrete(max_choices))"
        )
        self.latent_dim_pi = n_actions
        self.latent_dim_vf = 0
        if with_critic:
            self.value_pool = ValuePool(observation_space, layout.hidden_size)
            layers: list[nn.Module] = []
            last = self.value_pool.output_dim
            for width in vf_arch:
                layers += [nn.Linear(last, width), activation_fn()]
                last = width
            self.value_mlp = nn.Sequential(*layers)
            self.latent_dim_vf = last

    def mask_logits(self, logits: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Apply the observation's ``action_mask`` (rows with no valid action are left alone)."""
        invalid = ~as_flag(obs["action_mask"])
        invalid = invalid & ~invalid.all(dim=1, keepdim=True)
        return logits.masked_fill(invalid, NEG)

    def forward_actor(self, features: th.Tensor, apply_obs_mask: bool | None = None) -> th.Tensor:
        hidden, obs = self.layout.unpack(features)
        with attention_context(self.attention_backend, self.training, features.device):
            logits = self.actor(hidden, obs)
        if (
            self.use_obs_action_mask
            if apply_obs_mask is None
            else (apply_obs_mask and "action_mask" in obs)
        ):
            logits = self.mask_logits(logits, obs)
        return logits

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        hidden, obs = self.layout.unpack(features)
        if not self.critic_encoder_grad:
            hidden = hidden.detach()
        return self.value_mlp(self.value_pool(hidden, obs))

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

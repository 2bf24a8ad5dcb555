"""SB3 policies over a transformer encoder with task-shaped heads.

How the pieces attach to SB3 (nothing in SB3 is modified):

* ``features_extractor`` = :class:`~agents.extractor.TransformerExtractor` (the encoder;
  returns hidden states + observation extras packed in one flat tensor).
* ``mlp_extractor`` = :class:`~agents.heads.TaskHeads`: ``forward_actor`` -> action
  logits, ``forward_critic`` -> critic features. Built in ``_build_mlp_extractor``.
* ``action_net`` = ``nn.Identity()`` (the heads already output logits), ``value_net`` =
  ``nn.Linear(mlp_extractor.latent_dim_vf, 1)``. Both set in ``_build``, the one hook
  overridden.

The head family comes from the ``family`` kwarg (:func:`env_policy_kwargs` reads
``env.unwrapped.family``) or, for envs that do not tell it and old checkpoints, from the
observation keys (:func:`agents.heads.infer_family`).

``forward``, ``evaluate_actions``, ``get_distribution``, ``predict_values`` and masking
(``MaskableActorCriticPolicy``) are SB3's own, so the policies work with ``PPO``, ``A2C``,
sb3-contrib ``TRPO`` and ``MaskablePPO``, and :class:`agents.REINFORCE`.
:class:`TransformerQPolicy` puts the same extractor + heads in DQN's ``QNetwork``.

``ortho_init`` defaults to ``False``; when ``True`` it re-initialises the heads only,
never the (possibly pretrained) encoder.

TRPO note: sb3-contrib's TRPO treats every parameter whose *name* contains ``"value"`` as
critic. BERT-style encoders name their attention projections ``...attention.self.value``,
so TRPO would silently freeze a third of the actor's attention. ``named_parameters`` of
these policies therefore reports a path component that is exactly ``value`` as
``v_proj`` (state-dict keys, ``parameters()`` and checkpoints are unchanged); only the
heads' ``value_*`` modules and ``value_net`` read as critic.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from agents.extractor import TransformerExtractor
from agents.heads import FAMILIES, TaskHeads

DEFAULT_NET_ARCH: dict[str, list[int]] = {"pi": [256], "vf": [256]}


def _split_arch(net_arch: list[int] | dict[str, list[int]] | None) -> tuple[list[int], list[int]]:
    if net_arch is None:
        net_arch = DEFAULT_NET_ARCH
    if isinstance(net_arch, dict):
        return list(net_arch.get("pi", [])), list(net_arch.get("vf", []))
    return list(net_arch), list(net_arch)


def _extractor_kwargs(
    features_extractor_kwargs: dict[str, Any] | None, encoder: dict[str, Any]
) -> dict[str, Any]:
    """Encoder options given as policy kwargs override ``features_extractor_kwargs``."""
    merged = dict(features_extractor_kwargs or {})
    merged.update({key: value for key, value in encoder.items() if value is not None})
    merged.setdefault("backbone", "tiny")
    return merged


def make_optimizer(
    optimizer_class: type[th.optim.Optimizer],
    params: Any,
    lr: float,
    optimizer_kwargs: dict[str, Any],
) -> th.optim.Optimizer:
    """``optimizer_class(params, lr, **optimizer_kwargs)``, fused where torch offers it.

    ``params`` may be parameter groups with an ``lr_scale`` (:func:`lr_param_groups`): each
    step then runs that group at ``lr_scale`` times its ``lr``.

    Adam and AdamW get ``fused=True`` unless ``optimizer_kwargs`` chooses ``fused`` or
    ``foreach`` itself: one kernel over all tensors instead of a Python loop (on a 2-core
    CPU, 6.5x faster for MiniLM's 22.7M parameters; the result differs from the loop by
    float rounding, ~1e-7). Pass ``optimizer_kwargs=dict(fused=False, eps=1e-5)`` for
    SB3's loop (SB3 sets ``eps=1e-5`` only when ``optimizer_kwargs`` is None).
    """
    params = list(params)
    kwargs = dict(optimizer_kwargs)
    optimizer = None
    if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"fused", "foreach"} & set(
        kwargs
    ):
        try:
            optimizer = optimizer_class(params, lr=lr, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
            pass
    if optimizer is None:
        optimizer = optimizer_class(params, lr=lr, **kwargs)
    if any(group.get("lr_scale", 1.0) != 1.0 for group in optimizer.param_groups):
        optimizer.register_step_pre_hook(_scale_lrs)
        optimizer.register_step_post_hook(_unscale_lrs)
    return optimizer


ENCODER_MODULES = ("features_extractor", "pi_features_extractor", "vf_features_extractor")


def lr_param_groups(
    policy: nn.Module, head_lr_scale: float = 1.0, trainable_only: bool = False
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the encoder at the base learning rate, the rest
    (task heads, critic) at ``head_lr_scale`` times it.

    A pretrained encoder wants a small learning rate; a freshly initialised head learns
    slowly at that rate. The scale is kept in each group's ``lr_scale`` and applied at every
    step by :func:`make_optimizer`'s hooks, so SB3's learning-rate schedule (which writes one
    ``lr`` into every group) still drives both groups.

    :param policy: a policy whose encoders are the modules named in :data:`ENCODER_MODULES`.
    :param head_lr_scale: learning-rate multiplier of everything but the encoder (> 0).
    :param trainable_only: leave out parameters with ``requires_grad=False``.
    """
    head_lr_scale = _check_head_lr_scale(head_lr_scale)
    encoder = {
        id(param)
        for name in ENCODER_MODULES
        if isinstance(module := getattr(policy, name, None), nn.Module)
        for param in module.parameters()
    }
    params = [p for p in policy.parameters() if p.requires_grad or not trainable_only]
    if head_lr_scale == 1.0:
        return [{"params": params}]
    groups = [
        {"params": [p for p in params if id(p) in encoder], "lr_scale": 1.0},
        {"params": [p for p in params if id(p) not in encoder], "lr_scale": head_lr_scale},
    ]
    return [group for group in groups if group["params"]]


def _check_head_lr_scale(value: float) -> float:
    if not value > 0:
        raise ValueError(f"head_lr_scale={value}: must be > 0")
    return float(value)


def _scale_lrs(optimizer: th.optim.Optimizer, *_: Any) -> None:
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


def _unscale_lrs(optimizer: th.optim.Optimizer, *_: Any) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group.pop("base_lr", group["lr"])


def _alias_value(name: str) -> str:
    return ".".join("v_proj" if part == "value" else part for part in name.split("."))


class _TransformerHeadsMixin:
    """Constructor, heads, parameter names and constructor parameters of both actor-critic
    policies (SB3's and sb3-contrib's maskable one; see :class:`TransformerPolicy`)."""

    features_extractor: TransformerExtractor
    head_kwargs: dict[str, Any]

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = False,
        backbone: str | None = None,
        vocab_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        dtype: str | None = None,
        compile: bool | None = None,
        trim_padding: bool | None = None,
        attention_backend: str | None = None,
        decoder_layers: int = 1,
        task_families: list[str] | None = None,
        task_n_actions: list[int] | None = None,
        adapter_dim: int = 64,
        use_obs_action_mask: bool = True,
        critic_encoder_grad: bool = True,
        family: str | None = None,
        head_lr_scale: float = 1.0,
        features_extractor_class: type[BaseFeaturesExtractor] = TransformerExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        **kwargs: Any,
    ) -> None:
        self.head_lr_scale = _check_head_lr_scale(head_lr_scale)  # before anything is built
        self.head_kwargs = dict(
            decoder_layers=decoder_layers,
            task_families=task_families,
            task_n_actions=task_n_actions,
            adapter_dim=adapter_dim,
            use_obs_action_mask=use_obs_action_mask,
            critic_encoder_grad=critic_encoder_grad,
        )
        if family is not None:  # absent from checkpoints saved before the kwarg existed
            self.head_kwargs["family"] = family
        encoder = dict(backbone=backbone, vocab_size=vocab_size, backbone_kwargs=backbone_kwargs,
                       dtype=dtype, compile=compile, trim_padding=trim_padding,
                       attention_backend=attention_backend)  # fmt: skip
        if kwargs.pop("use_sde", False):  # SB3 passes use_sde=False; MaskablePPO's policy has none
            raise ValueError("transformer policies have Discrete actions: use_sde must be False")
        super().__init__(  # type: ignore[call-arg]  # ActorCriticPolicy or its maskable twin
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else DEFAULT_NET_ARCH,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=_extractor_kwargs(features_extractor_kwargs, encoder),
            share_features_extractor=share_features_extractor,
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        pi_arch, vf_arch = _split_arch(self.net_arch)  # type: ignore[attr-defined]
        assert isinstance(self.action_space, spaces.Discrete), (  # type: ignore[attr-defined]
            f"transformer policies need a Discrete action space, got {self.action_space}"  # type: ignore[attr-defined]
        )
        self.mlp_extractor = TaskHeads(
            self.features_extractor.layout,
            self.observation_space,  # type: ignore[attr-defined]
            int(self.action_space.n),  # type: ignore[attr-defined]
            pi_arch=pi_arch,
            vf_arch=vf_arch,
            activation_fn=self.activation_fn,  # type: ignore[attr-defined]
            num_heads=self.features_extractor.num_heads,
            attention_backend=self.features_extractor.attention_backend,
            **self.head_kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:  # type: ignore[attr-defined]
            # heads only: orthogonal init would wreck a pretrained encoder
            self.mlp_extractor.apply(partial(BasePolicy.init_weights, gain=np.sqrt(2)))
            self.value_net.apply(partial(BasePolicy.init_weights, gain=1.0))
        self.optimizer = make_optimizer(
            self.optimizer_class,  # type: ignore[attr-defined]
            lr_param_groups(self, self.head_lr_scale),  # type: ignore[arg-type]
            lr_schedule(1),
            self.optimizer_kwargs,  # type: ignore[attr-defined]
        )

    def named_parameters(  # type: ignore[override]
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """As ``nn.Module.named_parameters`` with encoder ``.value.`` shown as ``.v_proj.`` (see module doc)."""
        for name, param in super().named_parameters(prefix, recurse, remove_duplicate):  # type: ignore[misc]
            yield _alias_value(name), param

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(self.head_kwargs)
        if self.head_lr_scale != 1.0:  # older checkpoints load without the kwarg
            data["head_lr_scale"] = self.head_lr_scale
        return data


class TransformerPolicy(_TransformerHeadsMixin, ActorCriticPolicy):
    """Actor-critic policy (PPO, A2C, TRPO, REINFORCE) over a transformer encoder.

    >>> from stable_baselines3 import PPO
    >>> model = PPO(TransformerPolicy, env, policy_kwargs=dict(backbone="minilm"))  # doctest: +SKIP

    :param observation_space: a lmgym ``Dict`` observation space.
    :param action_space: ``Discrete``.
    :param lr_schedule: learning-rate schedule (given by the algorithm).
    :param net_arch: ``dict(pi=[...], vf=[...])``: hidden widths of the actor head MLPs and
        of the critic MLP (default ``pi=[256], vf=[256]``).
    :param activation_fn: activation of the head MLPs.
    :param ortho_init: orthogonal init of the heads (never the encoder). Default ``False``.
    :param backbone: ``"tiny"`` (default), ``"minilm"`` or a ``from_pretrained`` folder.
    :param vocab_size: vocabulary of a ``"tiny"`` encoder (default: ``input_ids`` high + 1).
    :param backbone_kwargs: see :func:`agents.backbones.make_backbone`.
    :param dtype: ``"bf16"``/``"fp16"`` autocast of the encoder (GPU); default fp32.
    :param compile: ``torch.compile`` the encoder (GPU).
    :param trim_padding: skip all-padding columns in the encoder (exact).
    :param attention_backend: attention kernels (:func:`agents.extractor.attention_context`).
        ``None`` (auto): the math kernel while training on CPU, where TRPO's
        Hessian-vector products differentiate twice (the flash and memory-efficient
        kernels cannot), so stock ``sb3_contrib.TRPO`` works as is; ``"math"`` always
        (TRPO on GPU; ``agents.train`` sets it for TRPO); ``"default"``: PyTorch's pick.
    :param decoder_layers: translation decoder depth.
    :param task_families: multitask: family of each task id.
    :param task_n_actions: multitask: action count of each task.
    :param adapter_dim: multitask: adapter width.
    :param use_obs_action_mask: mask logits with the ``action_mask`` observation.
    :param critic_encoder_grad: let the value loss train the (shared) encoder; ``False``
        detaches the critic's input so only the policy loss shapes the encoder.
    :param family: the env's task family (``env.unwrapped.family``, filled in by
        :func:`env_policy_kwargs`); ``None`` guesses it from the observation keys.
    :param head_lr_scale: learning-rate multiplier of the heads and the critic against the
        encoder's (:func:`lr_param_groups`; behaviour cloning with :func:`agents.pretrain`
        uses it too). Default 1.
    :param share_features_extractor: one encoder for actor and critic (default) or two.
    :param kwargs: the rest of ``ActorCriticPolicy``'s arguments.
    """


class MaskableTransformerPolicy(_TransformerHeadsMixin, MaskableActorCriticPolicy):
    """:class:`TransformerPolicy` for sb3-contrib's ``MaskablePPO`` (accepts ``action_masks``).

    Same arguments as :class:`TransformerPolicy` (no ``use_sde``). ``MaskablePPO`` reads
    masks from ``env.action_masks()``; the ``action_mask`` observation is applied too
    (same mask, so harmless) unless ``use_obs_action_mask=False``.
    """


class TransformerQNetwork(QNetwork):
    """DQN's Q-network: encoder + the task head, whose outputs are read as Q-values.

    Masking: under ``torch.no_grad()`` (acting, and DQN's bootstrap target
    ``max_a Q_target(s', a)``) invalid actions get :data:`agents.heads.NEG`, so greedy
    actions and targets range over valid actions only. With gradients on (the TD loss on
    the taken action) the raw values are returned, so an invalid action taken by
    epsilon-greedy exploration (SB3 samples it from the whole action space) still
    learns its real return instead of producing a constant -1e8 in the loss.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        features_extractor: TransformerExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        head_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # QNetwork.__init__ would build an MLP on the flat (seq_len * hidden) features:
        # skip it and build the task head instead.
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = list(net_arch) if net_arch is not None else [256]
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.head_kwargs = dict(head_kwargs or {})
        self.q_net = TaskHeads(  # type: ignore[assignment]
            features_extractor.layout,
            observation_space,
            int(action_space.n),
            pi_arch=self.net_arch,
            activation_fn=activation_fn,
            num_heads=features_extractor.num_heads,
            attention_backend=features_extractor.attention_backend,
            with_critic=False,
            **{k: v for k, v in self.head_kwargs.items() if k != "use_obs_action_mask"},
        )
        self.use_obs_action_mask = self.head_kwargs.get("use_obs_action_mask", True)

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        mask = self.use_obs_action_mask and not th.is_grad_enabled()
        return self.q_net.forward_actor(features, apply_obs_mask=mask)  # type: ignore[operator]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["head_kwargs"] = self.head_kwargs
        return data


class TransformerQPolicy(DQNPolicy):
    """DQN policy (``q_net`` + ``q_net_target``, each with its own encoder).

    :param net_arch: hidden widths of the head MLP (default ``[256]``); a
        ``dict(pi=..., vf=...)`` (as for the actor-critic policies) uses ``qf`` or ``pi``.
    :param ortho_init: accepted for a uniform interface; ignored (DQN never ortho-inits).
    Other arguments as :class:`TransformerPolicy`.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        backbone: str | None = None,
        vocab_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        dtype: str | None = None,
        compile: bool | None = None,
        trim_padding: bool | None = None,
        attention_backend: str | None = None,
        decoder_layers: int = 1,
        task_families: list[str] | None = None,
        task_n_actions: list[int] | None = None,
        adapter_dim: int = 64,
        use_obs_action_mask: bool = True,
        family: str | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = TransformerExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        ortho_init: bool = False,
        **kwargs: Any,
    ) -> None:
        self.head_kwargs = dict(
            decoder_layers=decoder_layers,
            task_families=task_families,
            task_n_actions=task_n_actions,
            adapter_dim=adapter_dim,
            use_obs_action_mask=use_obs_action_mask,
        )
        if family is not None:
            self.head_kwargs["family"] = family
        encoder = dict(backbone=backbone, vocab_size=vocab_size, backbone_kwargs=backbone_kwargs,
                       dtype=dtype, compile=compile, trim_padding=trim_padding,
                       attention_backend=attention_backend)  # fmt: skip
        if isinstance(net_arch, dict):
            net_arch = list(net_arch.get("qf", net_arch.get("pi", [256])))
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else [256],
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=_extractor_kwargs(features_extractor_kwargs, encoder),
            **kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # SB3's polyak_update writes the target's ``param.data`` in place while it stays in
        # eval mode: no version bump, no mode switch, so its encoder cache would go stale.
        self.q_net_target.features_extractor.cache = False
        self.optimizer = make_optimizer(
            self.optimizer_class, self.q_net.parameters(), lr_schedule(1), self.optimizer_kwargs
        )

    def make_q_net(self) -> TransformerQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return TransformerQNetwork(**net_args, head_kwargs=self.head_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.head_kwargs)
        return data


def env_policy_kwargs(env: Any) -> dict[str, Any]:
    """Policy kwargs an env implies beyond its spaces: ``family`` (the head to build, from
    ``env.unwrapped.family``) and, for a multitask env, ``task_families`` and
    ``task_n_actions`` (read from ``env.unwrapped``; works on a VecEnv too). An env that
    does not tell its family gets none: the policy then reads it off the observation keys.

    :param env: a gym env, a Gymnasium vector env or an SB3 ``VecEnv``.
    """
    kwargs: dict[str, Any] = {}
    family = _env_attr(env, "family")
    if isinstance(family, str) and family in (*FAMILIES, "multitask"):
        kwargs["family"] = family
    for name in ("task_families", "task_n_actions"):
        value = _env_attr(env, name)
        if value is not None:
            kwargs[name] = [v if isinstance(v, str) else int(v) for v in value]
    return kwargs


def _env_attr(env: Any, name: str) -> Any:
    """``env.unwrapped.<name>`` (first env of an SB3 ``VecEnv``), ``None`` when absent."""
    if hasattr(env, "get_attr"):  # SB3 VecEnv
        try:
            return env.get_attr(name, indices=[0])[0]
        except AttributeError:
            return None
    return getattr(getattr(env, "unwrapped", env), name, None)

"""``TransformerExtractor``: the encoder as an SB3 features extractor.

SB3 wants a features extractor to return one flat ``[batch, features_dim]`` tensor, and
then runs ``mlp_extractor`` / ``action_net`` / ``value_net`` on it. The task heads need
more than a pooled vector: per-token hidden states (pointer heads over positions, the
translation decoder's cross-attention) and a few observation entries (``position``,
``stage``, ``target_ids`` ...). So the extractor *packs* both into the flat tensor:

    features = [ hidden states (seq_len * hidden_size) | obs extras (float copies) ]

and the heads (``agents.heads.TaskHeads``, installed as the policy's ``mlp_extractor``)
unpack them with the same :class:`FeatureLayout`. This keeps SB3's contract (a tensor of
``features_dim``), so every SB3 code path (PPO, A2C, TRPO, MaskablePPO, DQN, shared or
separate extractors) runs unmodified. The cost is one concatenation copy per forward,
small next to the encoder itself.

Integer observations reach the extractor as float32 (SB3's ``preprocess_obs``); token ids
are cast back with ``.long()`` (exact below 2**24).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.backbones import make_backbone

#: Observation keys fed to the encoder rather than packed for the heads.
ENCODER_KEYS = ("input_ids", "token_type_ids")

DTYPES = {"bf16": th.bfloat16, "bfloat16": th.bfloat16, "fp16": th.float16, "float16": th.float16}


def attention_context(backend: str | None) -> contextlib.AbstractContextManager:
    """``sdpa_kernel(MATH)`` for ``backend="math"``, else a no-op."""
    if backend != "math":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


@dataclass(frozen=True)
class FeatureLayout:
    """How hidden states and observation extras sit in the flat features tensor.

    :param seq_len: observation length (``input_ids`` shape).
    :param hidden_size: encoder width.
    :param extras: ``(key, size)`` of every packed observation entry, in order.
    """

    seq_len: int
    hidden_size: int
    extras: tuple[tuple[str, int], ...]

    @classmethod
    def from_space(cls, observation_space: spaces.Dict, hidden_size: int) -> FeatureLayout:
        seq_len = int(observation_space["input_ids"].shape[0])
        extras = tuple(
            (key, int(space.shape[0]) if space.shape else 1)
            for key, space in observation_space.spaces.items()
            if key not in ENCODER_KEYS
        )
        return cls(seq_len, hidden_size, extras)

    @property
    def features_dim(self) -> int:
        return self.seq_len * self.hidden_size + sum(size for _, size in self.extras)

    def pack(self, hidden: th.Tensor, obs: dict[str, th.Tensor]) -> th.Tensor:
        """``[B, L, D]`` hidden states + obs extras -> ``[B, features_dim]``."""
        batch = hidden.shape[0]
        parts = [hidden.reshape(batch, -1)]
        parts += [obs[key].reshape(batch, -1).to(hidden.dtype) for key, _ in self.extras]
        return th.cat(parts, dim=1)

    def unpack(self, features: th.Tensor) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """Inverse of :meth:`pack`: ``(hidden [B, L, D], {key: float [B, size]})``."""
        batch = features.shape[0]
        n_hidden = self.seq_len * self.hidden_size
        hidden = features[:, :n_hidden].reshape(batch, self.seq_len, self.hidden_size)
        extras: dict[str, th.Tensor] = {}
        offset = n_hidden
        for key, size in self.extras:
            extras[key] = features[:, offset : offset + size]
            offset += size
        return hidden, extras


class TransformerExtractor(BaseFeaturesExtractor):
    """Run a transformer encoder over a lmgym ``Dict`` observation.

    :param observation_space: the env's ``Dict`` space (``input_ids``, ``attention_mask``,
        optional ``token_type_ids`` and task keys, see ``docs/ARCHITECTURE.md``).
    :param backbone: ``"tiny"``, ``"minilm"`` or a ``from_pretrained`` folder
        (see :func:`agents.backbones.make_backbone`).
    :param vocab_size: vocabulary size for ``"tiny"``; default ``input_ids`` high + 1.
    :param backbone_kwargs: extra arguments of :func:`~agents.backbones.make_backbone`
        (``dropout``, ``BertConfig`` fields for ``"tiny"``).
    :param dtype: ``"bf16"`` or ``"fp16"`` to run the encoder under ``torch.autocast``
        (GPU); ``None`` = fp32. Heads always run in fp32.
    :param compile: ``torch.compile`` the encoder in place (parameter names unchanged, so
        checkpoints load either way). Meant for GPU.
    :param trim_padding: run the encoder only up to the last attended position of the
        batch (the rest is padding, zero-filled in the features). Exact for any padding
        side; saves most of the encoder's time on short sentences.
    :param attention_backend: ``"math"`` forces PyTorch's math kernel for every
        scaled-dot-product attention (encoder and translation decoder). Required by TRPO,
        whose Hessian-vector products differentiate twice: the flash / memory-efficient
        kernels have no double backward. ``None`` lets PyTorch pick (fastest).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        backbone: str = "tiny",
        vocab_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        dtype: str | None = None,
        compile: bool = False,
        trim_padding: bool = True,
        attention_backend: str | None = None,
    ) -> None:
        assert (
            isinstance(observation_space, spaces.Dict) and "input_ids" in observation_space.spaces
        ), (
            "TransformerExtractor needs a Dict observation with 'input_ids' and "
            f"'attention_mask' (a lmgym env); got {observation_space}"
        )
        env_vocab = int(observation_space["input_ids"].high.max()) + 1
        seq_len = int(observation_space["input_ids"].shape[0])
        encoder = make_backbone(
            backbone,
            vocab_size=vocab_size if vocab_size is not None else env_vocab,
            max_length=seq_len,
            **(backbone_kwargs or {}),
        )
        hidden_size = int(encoder.config.hidden_size)
        layout = FeatureLayout.from_space(observation_space, hidden_size)
        super().__init__(observation_space, features_dim=layout.features_dim)
        if attention_backend not in (None, "math"):
            raise ValueError(f"attention_backend={attention_backend!r}: choose None or 'math'")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: choose 'bf16', 'fp16' or None (fp32)")
        self.encoder = encoder
        self.layout = layout
        self.hidden_size = hidden_size
        self.num_heads = int(getattr(encoder.config, "num_attention_heads", 2))
        self.dtype = dtype
        self.trim_padding = trim_padding
        self.use_token_type_ids = "token_type_ids" in observation_space.spaces
        self.attention_backend = attention_backend
        if compile:
            self.encoder.compile()

    def _autocast(self, device: th.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return th.autocast(device_type=device.type, dtype=DTYPES[self.dtype])

    def encode(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Per-token hidden states ``[B, seq_len, hidden_size]`` in fp32."""
        input_ids = obs["input_ids"].long()
        attention_mask = obs["attention_mask"].long()
        batch, seq_len = input_ids.shape
        kwargs: dict[str, th.Tensor] = {}
        if self.use_token_type_ids:
            kwargs["token_type_ids"] = obs["token_type_ids"].long()
        length = seq_len
        if self.trim_padding:
            attended = attention_mask.any(dim=0).nonzero()
            length = int(attended[-1]) + 1 if len(attended) else 1
        if length < seq_len:
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
            kwargs = {key: value[:, :length] for key, value in kwargs.items()}
        with self._autocast(input_ids.device), attention_context(self.attention_backend):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state.float()
        if length < seq_len:
            hidden = th.nn.functional.pad(hidden, (0, 0, 0, seq_len - length))
        return hidden

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return self.layout.pack(self.encode(observations), observations)

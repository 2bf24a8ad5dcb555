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

The encoder runs once per *distinct* encoder input (``input_ids``, ``attention_mask``,
``token_type_ids``), never once per step (both exact; ``dedup=False`` / ``cache=False``
switch them off):

* **dedup**: identical rows of a batch are encoded once and gathered back. A NER minibatch
  holds several words of one sentence, a QA minibatch both stages of a question; autograd
  sums the gradients of the copies, as if each had been encoded on its own.
* **cache**: without gradients (the rollout, evaluation), hidden states are kept per
  encoder input while the encoder's weights are unchanged, so an episode whose encoder
  input does not change between steps (NER: every word of a sentence; translation: the
  source while the prefix grows; QA: both stages) is encoded once. The cache is keyed by
  the input's bytes, invalidated by the weights' version counters (every optimizer
  step or ``load_state_dict`` bumps them) and emptied whenever the module switches mode
  (see :meth:`TransformerExtractor.train`), so it never serves states of other weights.
  It is used only in eval mode (``policy.set_training_mode(False)``: SB3's rollouts,
  ``predict``); DQN's target network, which SB3 updates in eval mode through
  ``param.data``, never caches.

* **length buckets** (``bucket_ratio``, off by default): the distinct rows are sorted by
  length and run in buckets whose longest row is at most ``bucket_ratio`` times the
  shortest, each trimmed to its own longest row. It cuts padded positions (NER, episode
  minibatches: 1.96 -> 1.22 encoder tokens per trained token) but on a 2-core CPU the
  extra, smaller encoder calls cost more than the padding saves (MiniLM NER PPO 10.5 ->
  4.1 env-steps/s, ``benchmarks/train_throughput.py``), hence off.

Hidden states at padding positions are zeroed, so a row's features do not depend on what
else is in its batch (the heads never read padding positions).
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


#: ``attention_backend`` values: ``None`` = auto (see :func:`attention_context`).
ATTENTION_BACKENDS = (None, "math", "default")


def attention_context(
    backend: str | None, training: bool = False, device: th.device | None = None
) -> contextlib.AbstractContextManager:
    """The scaled-dot-product attention kernels a forward pass may use.

    ``"math"``: PyTorch's math kernel, always. ``"default"``: PyTorch's choice, always
    (fastest; the flash / memory-efficient kernels have no double backward). ``None``
    (auto): the math kernel while a CPU module records gradients in training mode,
    PyTorch's choice otherwise. Double backward (TRPO's Hessian-vector products, which
    differentiate the KL's gradient) happens only there, so stock ``sb3_contrib.TRPO``
    works on CPU without options, while rollouts and evaluation (no gradients) keep the
    fused kernel. On GPU pass ``"math"`` for TRPO (``agents.train`` does).

    :param backend: ``None``, ``"math"`` or ``"default"``.
    :param training: the calling module's ``training`` flag.
    :param device: where the attention runs.
    """
    auto_math = (
        backend is None
        and training
        and th.is_grad_enabled()
        and (device is None or device.type == "cpu")
    )
    if backend != "math" and not auto_math:
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
    :param attention_backend: which scaled-dot-product attention kernels the encoder and
        the translation decoder use (:func:`attention_context`). ``None`` (auto): the math
        kernel while training on CPU with gradients (TRPO's Hessian-vector products
        differentiate twice, which the flash / memory-efficient kernels cannot), PyTorch's
        pick otherwise; ``"math"``: always the math kernel (TRPO on GPU); ``"default"``:
        always PyTorch's pick.
    :param dedup: encode identical rows of a batch once (exact; see the module doc).
    :param cache: reuse hidden states of inputs already encoded with the current weights
        when no gradient is needed (exact; see the module doc).
    :param cache_size: most encoder inputs the cache holds (it is emptied when full).
    :param bucket_ratio: run the (distinct) rows of a batch in length buckets whose longest
        row is at most this many times its shortest, each trimmed to its own length, so
        short sentences do not pay for the batch's longest (exact; ``None``: one batch).
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
        dedup: bool = True,
        cache: bool = True,
        cache_size: int = 4096,
        bucket_ratio: float | None = None,
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
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"attention_backend={attention_backend!r}: choose one of {ATTENTION_BACKENDS}"
            )
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
        self.dedup = dedup
        self.cache = cache
        self.cache_size = int(cache_size)
        if bucket_ratio is not None and bucket_ratio < 1.0:
            raise ValueError(f"bucket_ratio={bucket_ratio}: must be >= 1 (or None for one batch)")
        self.bucket_ratio = bucket_ratio
        self._cache: dict[bytes, th.Tensor] = {}
        self._cache_version: tuple[int, ...] | None = None
        #: encoder rows (after dedup / cache) and tokens (after trimming) run so far
        self.encoder_rows = 0
        self.encoder_tokens = 0
        if compile:
            self.encoder.compile()

    def _autocast(self, device: th.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return th.autocast(device_type=device.type, dtype=DTYPES[self.dtype])

    def encoder_inputs(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """``[B, n * seq_len]`` int64: the rows the encoder reads, side by side."""
        parts = [obs["input_ids"], obs["attention_mask"]]
        if self.use_token_type_ids:
            parts.append(obs["token_type_ids"])
        return th.cat([part.long() for part in parts], dim=1)

    def encode(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Per-token hidden states ``[B, seq_len, hidden_size]`` in fp32 (zero at padding)."""
        rows = self.encoder_inputs(obs)
        if self.cache and not self.training and not th.is_grad_enabled():
            return self._encode_cached(rows)
        if self.dedup and rows.shape[0] > 1:
            unique, inverse = th.unique(rows, dim=0, return_inverse=True)
            if unique.shape[0] < rows.shape[0]:
                return self._encode_rows(unique).index_select(0, inverse)
        return self._encode_rows(rows)

    def train(self, mode: bool = True) -> TransformerExtractor:
        """As ``nn.Module.train``; a switch of mode empties the cache.

        SB3 switches the policy to eval mode when a rollout starts and to training mode
        before it changes the weights, and some code changes weights without bumping
        version counters (sb3-contrib's TRPO line search assigns ``param.data``, SB3's
        ``polyak_update`` writes ``param.data`` in place), so the cache lives within one
        eval-mode stretch at most. A call that keeps the mode keeps the cache: SB3's
        ``predict`` sets eval mode on every call, and clearing there would re-encode an
        evaluated NER sentence once per word. Code that edits ``.data`` of an eval-mode
        policy itself should call :meth:`clear_cache`.
        """
        if mode != self.training:
            self.clear_cache()
        return super().train(mode)

    def clear_cache(self) -> None:
        """Forget every cached hidden state."""
        self._cache.clear()
        self._cache_version = None

    def _encode_cached(self, rows: th.Tensor) -> th.Tensor:
        version = tuple((p.data_ptr(), p._version) for p in self.encoder.parameters())
        if version != self._cache_version or len(self._cache) > self.cache_size:
            self._cache.clear()
            self._cache_version = version
        keys = [row.numpy().tobytes() for row in rows.cpu()]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        if missing:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            index = th.tensor([first[key] for key in missing], device=rows.device)
            hidden = self._encode_rows(rows.index_select(0, index))
            self._cache.update(zip(missing, hidden, strict=True))
        return th.stack([self._cache[key] for key in keys])

    def _encode_rows(self, rows: th.Tensor) -> th.Tensor:
        """Encode ``rows`` in length buckets (each padded to its own longest row)."""
        if self.bucket_ratio is None or rows.shape[0] < 2:
            return self._run_encoder(rows)
        seq_len = self.layout.seq_len
        mask = rows[:, seq_len : 2 * seq_len] > 0
        positions = th.arange(1, seq_len + 1, device=rows.device)
        lengths = (mask * positions).amax(dim=1).clamp(min=1)
        order = th.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order].tolist()
        chunks, start = [], 0
        for i in range(1, len(sorted_lengths) + 1):
            if (
                i == len(sorted_lengths)
                or sorted_lengths[i] * self.bucket_ratio < sorted_lengths[start]
            ):
                chunks.append(order[start:i])
                start = i
        if len(chunks) == 1:
            return self._run_encoder(rows)
        hidden = th.cat([self._run_encoder(rows.index_select(0, idx)) for idx in chunks])
        return hidden.index_select(0, th.argsort(th.cat(chunks)))

    def _run_encoder(self, rows: th.Tensor) -> th.Tensor:
        seq_len = self.layout.seq_len
        input_ids, attention_mask = rows[:, :seq_len], rows[:, seq_len : 2 * seq_len]
        kwargs: dict[str, th.Tensor] = {}
        if self.use_token_type_ids:
            kwargs["token_type_ids"] = rows[:, 2 * seq_len :]
        length = seq_len
        if self.trim_padding:
            attended = attention_mask.any(dim=0).nonzero()
            length = int(attended[-1]) + 1 if len(attended) else 1
        if length < seq_len:
            input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
            kwargs = {key: value[:, :length] for key, value in kwargs.items()}
        self.encoder_rows += int(input_ids.shape[0])
        self.encoder_tokens += int(input_ids.numel())
        attention = attention_context(self.attention_backend, self.training, input_ids.device)
        with self._autocast(input_ids.device), attention:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state.float() * attention_mask.unsqueeze(-1).float()
        if length < seq_len:
            hidden = th.nn.functional.pad(hidden, (0, 0, 0, seq_len - length))
        return hidden

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return self.layout.pack(self.encode(observations), observations)

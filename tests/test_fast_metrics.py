"""The env fast paths score exactly as the reference tools do: sentence BLEU/chrF equal
sacreBLEU's ``sentence_score`` and span F1/EM equal the official SQuAD v1.1 script, both
as functions and as the rewards and ``episode_metrics`` of the envs (every reward mode)."""

from __future__ import annotations

import re
import string
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

import lmgym.batch_metrics
from lmgym.batch_metrics import BatchSentenceScorer, cached_batch_scorer
from lmgym.batch_squad import BatchSpanScorer, analyse_spans
from lmgym.envs.translation_data import ByteLevelDecoder
from lmgym.metrics import (
    NormalizedAnswer,
    SentenceScorer,
    normalize_answer,
    squad_best_f1_em,
    tokenize_13a,
)
from tests.conftest import needs_real_data

TRANSLATION, QA = "lmgym/Translation-v0", "lmgym/QA-v0"
SACRE_BLEU, SACRE_CHRF = BLEU(effective_order=True), CHRF()


# -- the official SQuAD v1.1 evaluation script (evaluate-v1.1.py), verbatim ---------------------
def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def official_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_best(prediction: str, golds: list[str]) -> tuple[float, float]:
    f1 = max(official_f1_score(prediction, g) for g in golds)
    em = max(official_exact_match_score(prediction, g) for g in golds)
    return float(f1), float(em)


def sacre(metric: str, hypothesis: str, reference: str) -> float:
    scorer = SACRE_BLEU if metric == "bleu" else SACRE_CHRF
    return scorer.sentence_score(hypothesis, [reference]).score


# Strings where shortcuts go wrong: overlapping n-grams, 13a's digit contexts, entities,
# punctuation at word edges, empty and whitespace-only lines, non-ASCII.
TRICKY = [
    "",
    "   ",
    "aaaa aaaa aaaa",
    "a a a a a a",
    "abab ababab aba",
    "Ein Mann, der 3.5 km läuft - 10-20 Minuten.",
    "Zwei Hunde &amp; eine Katze &quot;spielen&quot; &lt;draußen&gt;.",
    "x<skipped>y -\nz (Klammern) [eckig] {geschweift} a/b c:d e;f 1,000 2.",
    "Frauen ... und Männer ,,, 5-",
    "Ça va? Naïve café — „Anführung“ 🙂",
    "ein ein ein Mann Mann",
]


def test_tokenize_13a_equals_sacrebleu():
    reference = Tokenizer13a()
    lines = TRICKY + [a + " " + b for a in TRICKY for b in TRICKY]
    for line in lines:
        assert tokenize_13a(line) == reference(line), repr(line)


def test_sentence_scorer_equals_sacrebleu_on_tricky_strings():
    references = TRICKY[1:]
    scorer = SentenceScorer(references)
    for example, reference in enumerate(references):
        for hypothesis in TRICKY:
            for metric in ("bleu", "chrf"):
                got = scorer.scores(metric, [hypothesis], [example])[0]
                assert got == sacre(metric, hypothesis, reference), (metric, hypothesis, reference)
    with pytest.raises(ValueError, match="choose one of"):
        scorer.scores("ter", ["x"], [0])


def test_batch_scorer_equals_sacrebleu_on_tricky_strings():
    # Every hypothesis against every reference in one batch; the separator characters the
    # batch path joins with (and falls back on) appear in some hypotheses.
    references = TRICKY[1:]
    hypotheses = TRICKY + ["a\x00b ein", "Mann \uffff läuft.", "1,000-2.5 ... ,a -b"]
    scorer = BatchSentenceScorer(references)
    pairs = [(h, e) for e in range(len(references)) for h in hypotheses]
    for metric in ("bleu", "chrf"):
        for batch in (pairs, [p for p in pairs if "\uffff" not in p[0]]):
            got = scorer.scores(metric, [h for h, _ in batch], [e for _, e in batch])
            expected = [sacre(metric, h, references[e]) for h, e in batch]
            assert got.tolist() == expected, metric
    assert scorer.scores("bleu", [], []).shape == (0,)
    with pytest.raises(ValueError, match="choose one of"):
        scorer.scores("ter", ["x"], [0])


def test_batch_chrf_drops_every_unicode_whitespace_like_sacrebleu():
    # chrF drops what str.split() splits on: all of Unicode's whitespace, not only ASCII.
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()] + ["\x00", "\u3001"]
    rng = np.random.default_rng(5)
    references = ["ab\u3000c d\xa0e", "a\x85b\u2028c", "abc"]
    letters = list("abcde") + spaces

    def text() -> str:
        return "".join(rng.choice(letters, size=int(rng.integers(0, 12))))

    hypotheses = [text() for _ in range(200)] + ["".join(spaces)]
    examples = rng.integers(0, len(references), len(hypotheses))
    got = BatchSentenceScorer(references).scores("chrf", hypotheses, examples).tolist()
    expected = [sacre("chrf", h, references[e]) for h, e in zip(hypotheses, examples, strict=True)]
    assert got == expected


@pytest.mark.parametrize("dense_lookup", [0, 1 << 30])
def test_batch_scorer_equals_sacrebleu_on_small_vocabulary_fuzz(monkeypatch, dense_lookup):
    # Few distinct words and letters: many higher-order n-gram matches and clipped
    # repeats; n-grams looked up by binary search only, then by dense tables only.
    monkeypatch.setattr(lmgym.batch_metrics, "_DENSE_LOOKUP", dense_lookup)
    rng = np.random.default_rng(7)
    words = ["a", "b", "ab", "ba", "aa", "c", "b.", "1,5", "-"]

    def sentence() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(0, 14))))

    references = [sentence() for _ in range(40)]
    scorer = BatchSentenceScorer(references)
    examples = rng.integers(0, len(references), 300)  # repeats: one reference, many episodes
    hypotheses = [sentence() for _ in examples]
    for metric in ("bleu", "chrf"):
        got = scorer.scores(metric, hypotheses, examples).tolist()
        expected = [
            sacre(metric, h, references[e]) for h, e in zip(hypotheses, examples, strict=True)
        ]
        assert got == expected, metric
        assert len(set(got)) > 20


@pytest.mark.parametrize("n_queries", [3, 10_000])  # binary search, then a dense table
def test_lookup_positions_and_values_of_sorted_keys(n_queries):
    rng = np.random.default_rng(3)
    size = 50_000
    keys = np.unique(rng.integers(0, size, 2_000))
    values = rng.integers(0, 100, len(keys)).astype(np.int32)
    query = rng.integers(0, size, n_queries)
    query[: len(query) // 2] = rng.choice(keys, len(query) // 2)  # hits and misses
    where = {k: i for i, k in enumerate(keys.tolist())}
    got = lmgym.batch_metrics._lookup(keys, query, size)
    assert got.tolist() == [where.get(q, -1) for q in query.tolist()]
    got = lmgym.batch_metrics._lookup(keys, query, size, values, missing=-7)
    expected = [values[where[q]] if q in where else -7 for q in query.tolist()]
    assert got.tolist() == expected


def test_key_table_reused_between_lookups_equals_lookup(monkeypatch):
    rng = np.random.default_rng(6)
    table = lmgym.batch_metrics._KeyTable()
    for size in (1_000, 50_000, 20_000, 50_000, 300):  # grows, then serves smaller ones
        keys = np.unique(rng.integers(0, size, size // 10))
        query = rng.integers(0, size, 2_000)
        expected = lmgym.batch_metrics._lookup(keys, query, size)
        assert table.lookup(keys, query, size).tolist() == expected.tolist()
        assert (table.table == -1).all()  # at rest again
    monkeypatch.setattr(lmgym.batch_metrics, "_DENSE_LOOKUP", 100)  # binary search instead
    assert table.lookup(keys, query, size).tolist() == expected.tolist()


def test_byte_level_decoder_equals_decode_batch():
    core = gym.make(TRANSLATION, data_dir="sample").unwrapped.core
    tokenizer = core.target_tokenizer
    decoder = ByteLevelDecoder.for_tokenizer(tokenizer)
    assert decoder is not None
    rng = np.random.default_rng(3)
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    # Random ids (special tokens, bytes that are no valid UTF-8 on their own) and real text.
    rows = [rng.integers(0, V, int(rng.integers(0, 70))).tolist() for _ in range(3000)]
    rows += [tokenizer.encode(core.references[i]).ids for i in range(min(200, core.n_examples))]
    assert decoder.decode_batch(rows) == tokenizer.decode_batch(rows, skip_special_tokens=True)
    # Other tokenizers are decoded by their own decode_batch.
    assert ByteLevelDecoder.for_tokenizer(core.tokenizer) is None
    assert ByteLevelDecoder.for_tokenizer(object()) is None


def test_byte_level_decoder_decodes_id_arrays_like_decode_batch():
    tokenizer = gym.make(TRANSLATION, data_dir="sample").unwrapped.core.target_tokenizer
    decoder = ByteLevelDecoder.for_tokenizer(tokenizer)
    assert decoder is not None
    rng = np.random.default_rng(4)
    V = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = rng.integers(0, V, (500, 64)).astype(np.int32)
    lengths = rng.integers(0, 65, 500)
    rows = [row[:n] for row, n in zip(ids.tolist(), lengths.tolist(), strict=True)]
    expected = tokenizer.decode_batch(rows, skip_special_tokens=True)
    assert decoder.decode_rows(ids, lengths) == expected
    assert decoder.decode_rows(ids[:0], lengths[:0]) == []


def test_sentence_scorer_cache_is_bounded_and_evictions_do_not_change_scores():
    references = TRICKY[5:]
    scorer = SentenceScorer(references, max_cached=2)
    hypothesis = "Ein Mann läuft 10-20 Minuten."
    for example in [0, 1, 2, 0, 3, 1]:  # more references than the cache holds
        for metric in ("bleu", "chrf"):
            assert scorer.scores(metric, [hypothesis], [example]) == [
                sacre(metric, hypothesis, references[example])
            ]
    assert len(scorer._bleu_refs) == len(scorer._chrf_refs) == 2
    assert list(scorer._chrf_refs) == [3, 1]  # the most recently used are kept
    scorer.scores("chrf", [hypothesis] * 3, [0, 1, 2])  # a batch of 3 in flight
    assert scorer.max_cached == 6 and len(scorer._chrf_refs) == 4
    with pytest.raises(ValueError, match="max_cached"):
        SentenceScorer(references, max_cached=0)


def test_normalize_answer_equals_official_on_edge_cases_and_fuzz():
    # Non-ASCII and control characters are word boundaries for the article regex (not for
    # str.split): the fast path must fall back there.
    cases = ["The cat", "a", "an", "the", "", "  ", "the\x01x", "the’s dog", "\u212a the"]
    cases += ["a1 the2 an", "x-the y", "THE_a", "\x1cthe\x1fan\x00a", "banana an theatre"]
    rng = np.random.default_rng(0)
    alphabet = list("aent hx1.,'-_\x01\x1c’Ç\t")
    cases += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 12)))) for _ in range(20000)]
    for text in cases:
        assert normalize_answer(text) == official_normalize_answer(text), repr(text)


def test_squad_best_f1_em_equals_official_on_tricky_answers():
    golds = ["the cat", "The Cat!", "a", "an apple a day", "cat cat dog", "3.5 km"]
    predictions = ["", "the", "cat", "Cat cat", "dog cat cat.", "apple day", "3.5", "35 km"]
    for k in range(1, len(golds) + 1):
        normalized = [NormalizedAnswer(g) for g in golds[:k]]
        for prediction in predictions:
            assert squad_best_f1_em(prediction, normalized) == official_best(
                prediction, golds[:k]
            ), (prediction, golds[:k])


def subword_offsets(text: str) -> list[tuple[int, int]]:
    """Token spans like a WordPiece tokenizer's: words and punctuation apart, words cut
    into pieces of up to three characters (so spans start and end inside words)."""
    out = []
    for m in re.finditer(r"\w+|[^\w\s]", text):
        a, b = m.span()
        out += [(i, min(i + 3, b)) for i in range(a, b, 3)]
    return out


SPAN_CONTEXTS = [
    "The cat sat on the mat, and a dog (an old one) barked at the cat.",
    "U.S.-based e-mail: the_end. Anthem theatre; a1 the2 an... 3.5km!",
    "Naïve café — „Anführung“ the–end ΑΣΒ ΟΔΟΣ İthe x’the the’s don't",
    "  leading   and\ttabs\nnewline\u00a0nbsp \x1cthe\x1fan a  ",
    "aaaa a an the The THE thé banana an theatre-the a-an",
]
SPAN_ANSWERS = [
    ["the cat", "cat", "The Cat!", "a dog"],
    ["U.S.-based", "e-mail", "the_end", "3.5km"],
    ["café", "the–end", "ΑΣ", "the", "ΟΔΟΣ"],
    ["tabs newline", "an", "nbsp"],
    ["banana an theatre", "a", "aaaa"],
]


def test_batch_span_scorer_equals_official_on_every_span_of_tricky_contexts():
    offsets = [subword_offsets(c) for c in SPAN_CONTEXTS]
    par_base = np.cumsum([0] + [len(o) for o in offsets])
    answers = [a for golds in SPAN_ANSWERS for a in golds]
    answer_base = np.cumsum([0] + [len(g) for g in SPAN_ANSWERS])
    flat = np.array([span for o in offsets for span in o], dtype=np.int32)
    scorer = BatchSpanScorer(analyse_spans(SPAN_CONTEXTS, flat, par_base, answers, answer_base))
    first, last, questions, texts = [], [], [], []
    for p, context in enumerate(SPAN_CONTEXTS):
        for i in range(par_base[p], par_base[p + 1]):
            for j in range(i, par_base[p + 1]):
                first.append(i)
                last.append(j)
                questions.append(p)
                texts.append(context[flat[i, 0] : flat[j, 1]])
    ids, lengths, fallback = scorer.words(np.array(first), np.array(last))
    f1, em = scorer.scores(ids, lengths, np.array(questions))
    assert 0 < fallback.mean() < 0.5  # some spans need the string path, most do not
    checked = 0
    for k in np.flatnonzero(~fallback).tolist():
        expected = official_best(texts[k], SPAN_ANSWERS[questions[k]])
        assert (f1[k], em[k]) == expected, (texts[k], SPAN_ANSWERS[questions[k]])
        checked += 1
    assert checked > 1000 and 0 < em.sum() and f1.max() == 1.0
    # The empty prediction: EM only against a gold that normalises to nothing.
    f1, em = scorer.scores(np.zeros(0, dtype=np.int64), np.zeros(5, dtype=np.int64), np.arange(5))
    assert list(zip(f1.tolist(), em.tolist(), strict=True)) == [
        official_best("", golds) for golds in SPAN_ANSWERS
    ]
    assert em.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="par_base"):
        analyse_spans(SPAN_CONTEXTS, flat, par_base[:-1], answers, answer_base)


# -- real data ------------------------------------------------------------------------------------
def noisy_hypotheses(core, rng: np.random.Generator, example: int) -> list[str]:
    """Texts of several kinds for one example: the reference tokens, a noisy copy, a
    prefix, random tokens."""
    gold = core.data["target"][example, : core.data["target_len"][example]].tolist()
    V = core.target_vocab_size
    noisy = [t if rng.random() < 0.7 else int(rng.integers(2, V)) for t in gold]
    prefix = gold[: int(rng.integers(0, len(gold) + 1))]
    random = rng.integers(2, V, size=int(rng.integers(1, 65))).tolist()
    texts = core.target_tokenizer.decode_batch(
        [gold, noisy, prefix, random], skip_special_tokens=True
    )
    return [t.strip() for t in texts]


@needs_real_data
@pytest.mark.data
def test_sentence_scorer_equals_sacrebleu_on_multi30k_validation():
    core = gym.make(TRANSLATION, split="validation").unwrapped.core
    rng = np.random.default_rng(0)
    scorer = SentenceScorer(core.references)
    hypotheses, examples = [], []
    for example in range(core.n_examples):
        for text in noisy_hypotheses(core, rng, example) + [core.references[example - 1]]:
            hypotheses.append(text)
            examples.append(example)
    tokenizer = Tokenizer13a()
    assert all(tokenize_13a(h) == tokenizer(h) for h in hypotheses)
    for metric in ("bleu", "chrf"):
        expected = [
            sacre(metric, h, core.references[e]) for h, e in zip(hypotheses, examples, strict=True)
        ]
        got = scorer.scores(metric, hypotheses, examples)
        assert got == expected, (
            f"{metric}: {sum(a != b for a, b in zip(got, expected, strict=True))} differ"
        )
        assert len(set(got)) > 100  # the texts span a range of scores, not just 0 and 100


@needs_real_data
@pytest.mark.data
def test_batch_scorer_equals_sacrebleu_on_multi30k():
    # Validation references with noisy, prefix, random-token and other-reference
    # hypotheses; and the train split's cached analysis against random-token hypotheses
    # (what a random policy writes), the same example twice in one batch included.
    for split, kinds in (("validation", slice(None)), ("train", slice(3, 4))):
        core = gym.make(TRANSLATION, split=split).unwrapped.core
        rng = np.random.default_rng(0)
        examples = rng.choice(core.n_examples, size=600, replace=split == "train")
        hypotheses, owners = [], []
        for example in examples.tolist():
            texts = noisy_hypotheses(core, rng, example) + [core.references[example - 1]]
            for text in texts[kinds]:
                hypotheses.append(text)
                owners.append(example)
        batch = cached_batch_scorer(core.references)
        for metric in ("bleu", "chrf"):
            expected = [
                sacre(metric, h, core.references[e])
                for h, e in zip(hypotheses, owners, strict=True)
            ]
            got = batch.scores(metric, hypotheses, owners).tolist()
            assert got == expected, (
                f"{split} {metric}: {sum(a != b for a, b in zip(got, expected, strict=True))} differ"
            )


def validation_vec(env_id: str, n: int, reward_mode: str):
    """``n`` native vector envs of ``env_id`` on the real validation split."""
    return gym.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        split="validation",
        reward_mode=reward_mode,
    )


@needs_real_data
@pytest.mark.data
@pytest.mark.parametrize("mode", ["bleu", "chrf", "bleu_dense", "chrf_dense"])
def test_translation_rewards_and_metrics_equal_sacrebleu_on_multi30k(mode):
    n = 16
    env = validation_vec(TRANSLATION, n, mode)
    core = env.unwrapped.core
    metric, dense = mode.split("_")[0], mode.endswith("_dense")
    rng = np.random.default_rng(1)
    env.reset(seed=3)
    previous = np.zeros(n)  # score of each slot's prefix before this step (dense modes)
    ended = 0
    for _ in range(150):
        expert = env.unwrapped.expert_actions()
        noise = rng.integers(2, core.target_vocab_size, size=n)
        actions = np.where(rng.random(n) < 0.75, expert, noise)
        starting = env.unwrapped._done.copy()  # these slots reset this step (next-step autoreset)
        _, rewards, terminated, truncated, info = env.step(actions)
        state = env.unwrapped.state
        texts = core.hypotheses(state, np.arange(n))
        references = [core.references[int(e)] for e in state["example"]]
        scores = np.array([sacre(metric, h, r) for h, r in zip(texts, references, strict=True)])
        done = terminated | truncated
        for slot in range(n):
            if starting[slot]:
                assert rewards[slot] == 0.0
                previous[slot] = 0.0
                continue
            if dense:
                expected = np.float32((scores[slot] - previous[slot]) / 100.0)
            else:
                expected = np.float32(scores[slot] / 100.0) if done[slot] else 0.0
            assert np.float32(rewards[slot]) == expected, (slot, texts[slot])
            previous[slot] = scores[slot]
        for slot in np.flatnonzero(done):
            metrics = {k: v[slot] for k, v in info["episode_metrics"].items()}
            assert metrics["bleu"] == sacre("bleu", texts[slot], references[slot])
            assert metrics["chrf"] == sacre("chrf", texts[slot], references[slot])
            ended += 1
    assert ended >= 2 * n


@needs_real_data
@pytest.mark.data
def test_squad_best_f1_em_equals_official_on_squad_validation():
    core = gym.make(QA, split="validation").unwrapped.core
    rng = np.random.default_rng(0)
    checked = 0
    for question in range(core.n_questions):
        golds = core.gold_answers(question)
        context = core.contexts[int(core.data["question_par"][question])]
        predictions = [*golds, "", golds[0].upper() + " the", golds[0][1:]]
        for _ in range(3):
            a = int(rng.integers(0, len(context)))
            predictions.append(context[a : a + int(rng.integers(0, 80))])
        normalized = core.normalized_golds(question)
        for prediction in predictions:
            assert squad_best_f1_em(prediction, normalized) == official_best(prediction, golds), (
                prediction,
                golds,
            )
            checked += 1
    assert core.n_questions == 1988 and checked >= 9 * core.n_questions


@needs_real_data
@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "validation"])
def test_span_scores_equal_official_squad_on_random_spans(split):
    # What a random policy and an expert point at: long, short and gold spans, spans
    # outside the context or reversed, "no answer here"; batch path and fallbacks alike.
    core = gym.make(QA, split=split).unwrapped.core
    rng = np.random.default_rng(0)
    n = 6000
    windows = rng.integers(0, core.n_examples, n)
    lo, hi = core.data["lo"][windows], core.data["hi"][windows]
    starts = rng.integers(lo, hi)
    ends = starts + rng.integers(0, 30, n)
    ends[::3] = starts[::3] + rng.integers(0, 3, len(ends[::3]))
    gold = core.data["gold_start"][windows] >= 0
    starts[::5] = np.where(gold, core.data["gold_start"][windows], starts)[::5]
    ends[::5] = np.where(gold, core.data["gold_end"][windows], ends)[::5]
    starts[::17] = 0
    ends[::19] = starts[::19] - 1
    f1, em = core.span_scores(windows, starts, ends)
    for k in range(n):
        window = int(windows[k])
        prediction = core.prediction(window, int(starts[k]), int(ends[k]))
        if prediction is None:
            expected = (float(core.data["gold_start"][window] < 0),) * 2
        else:
            expected = official_best(
                prediction, core.gold_answers(int(core.data["question"][window]))
            )
        assert (f1[k], em[k]) == expected, (prediction, k)
    assert 0.05 < em.mean() < f1.mean() < 0.9


@needs_real_data
@pytest.mark.data
@pytest.mark.parametrize("mode", ["f1", "em"])
def test_qa_rewards_and_metrics_equal_official_squad(mode):
    n = 64
    env = validation_vec(QA, n, mode)
    core = env.unwrapped.core
    rng = np.random.default_rng(2)
    env.reset(seed=5)
    ended = hits = 0
    for _ in range(60):
        masks = env.unwrapped.action_masks()
        random = (rng.random(masks.shape) * masks).argmax(axis=1)
        # mostly the expert's span (scores near 1), else random valid positions
        actions = np.where(rng.random(n) < 0.5, env.unwrapped.expert_actions(), random)
        _, rewards, terminated, _, info = env.step(actions)
        state = env.unwrapped.state
        for slot in np.flatnonzero(terminated):
            window = int(state["example"][slot])
            start, end = int(state["start"][slot, 0]), int(state["end"][slot])
            prediction = core.prediction(window, start, end)
            if prediction is None:
                f1 = em = float(core.data["gold_start"][window] < 0)
            else:
                golds = core.gold_answers(int(core.data["question"][window]))
                f1, em = official_best(prediction, golds)
            assert info["episode_metrics"]["f1"][slot] == f1
            assert info["episode_metrics"]["exact_match"][slot] == em
            assert rewards[slot] == np.float32(f1 if mode == "f1" else em)
            ended += 1
            hits += em == 1.0
    assert ended >= n and 0 < hits < ended

"""Named-entity recognition: tag each word of a sentence with a BIO tag."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lmgym.data.errors import DataFormatError, LmgymDataError
from lmgym.data.loaders import TaggedSentence
from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import State, int_box, sel
from lmgym.envs.dataset import DataArgs, DatasetCore, cls_sep, row_starts, write_back
from lmgym.envs.tagging import (  # noqa: F401  (tag_set, balanced_weights: re-exported)
    CONLL2003_TAGS,
    allowed_after,
    balanced_weights,
    conll_source,
    entity_types,
    tag_set,
    valid_bio,
)
from lmgym.metrics import bio_entities, entity_scores

REWARD_MODES = ("token", "balanced", "f1", "entity")


class NERCore(DatasetCore[TaggedSentence]):
    """Batched NER transitions. See :class:`NEREnv` for the behaviour."""

    family = "ner"
    reward_modes = REWARD_MODES
    augment_ops = ("mask",)  # word positions point into the row: keep them

    def __init__(
        self,
        *,
        dataset: str = "conll2003",
        max_length: int = 128,
        max_words: int = 128,
        reward_mode: str = "token",
        balance_power: float = 1.0,
        entity_cost: float = 1.0 / 3.0,
        bio_mask: bool = True,
        tags: tuple[str, ...] | None = None,
        tag_column: int = -1,
        augment: Mapping[str, float] | None = None,
        **data: Any,
    ) -> None:
        """:param data: the split, its files and the tokenizer (:class:`DataArgs`)."""
        args = DataArgs.of(self, data)
        self.set_reward_mode(reward_mode)
        self.set_sizes(max_length=(max_length, 4), max_words=(max_words, 1))
        if not entity_cost >= 0:
            raise ValueError(
                f"entity_cost={entity_cost}: must be >= 0 (the cost of a wrong entity)"
            )
        self.entity_cost = float(entity_cost)
        self.bio_mask = bio_mask
        train = self.open_data(args, conll_source, dataset, tag_column)
        if tags is None:
            tags = (
                CONLL2003_TAGS
                if args.data_files is None and dataset == "conll2003"
                else tag_set(train.load())
            )
        self.tags = tuple(tags)
        self.mask_table = allowed_after(self.tags, bio_mask)
        self.fit_tokenizer(
            args.tokenizer,
            lambda: (" ".join(s.words) for s in train.load()),
            train.digest,
            args.vocab_size,
        )
        self.set_augment(augment)
        self.load_arrays(
            "ner",
            "ner",
            self._source.digest,
            self.token_info.digest,
            self.tags,
            max_length,
            max_words,
            bio_mask,
        )
        self._tables()
        self.tag_weights = np.ones(len(self.tags), dtype=np.float32)
        if reward_mode == "balanced":
            gold = self.data["gold"] if self.split == "train" else None
            self.tag_weights = balanced_weights(
                self.tags, train.load() if gold is None else gold, balance_power
            )

        n_tags = len(self.tags)
        self.define_spaces(
            n_tags,
            position=int_box(max_length - 1, (1,)),
            prev_tags=int_box(n_tags - 1, (max_words,), low=-1),
        )

    # -- building the tokenised split (cached) -------------------------------------------
    #: The raw sentences of the split (loaded lazily; used by render and evaluation).
    sentences = DatasetCore.records

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        sentences = self.sentences()
        index = {t: i for i, t in enumerate(self.tags)}
        info, L, W = self.token_info, self.max_length, self.max_words
        n = len(sentences)
        encodings = self.tokenizer.encode_batch(
            [list(s.words) for s in sentences], is_pretokenized=True, add_special_tokens=False
        )
        rows: list[list[int]] = []
        starts = np.zeros((n, W), dtype=np.int32)
        gold = np.full((n, W), -1, dtype=np.int32)
        end_start = np.full((n, W), -1, dtype=np.int32)
        end_type = np.full((n, W), -1, dtype=np.int32)
        n_words = np.zeros(n, dtype=np.int32)
        n_gold = np.zeros(n, dtype=np.int32)
        n_truncated = 0
        types = entity_types(self.tags)
        for i, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
            for w, tag in enumerate(sentence.tags):
                if tag not in index:
                    raise DataFormatError(
                        self._source.path or "hub data",
                        sentence.line + w or None,
                        f"tag {tag!r} (word {sentence.words[w]!r}) is not in the tag set {self.tags}; "
                        "pass tags=(...) to gym.make or fix the file",
                    )
            tag_ids = [index[t] for t in sentence.tags]
            if self.bio_mask and not valid_bio(self.mask_table, tag_ids):
                raise DataFormatError(
                    self._source.path or "hub data",
                    sentence.line or None,
                    f"sentence {i + 1} ({' '.join(sentence.words[:8])} ...) has an I- tag that does not follow "
                    "B-/I- of its type (IOB1 data?); convert to IOB2 or pass bio_mask=False",
                )
            ids, word_ids = encoding.ids, encoding.word_ids
            first: dict[int, int] = {}
            for k, word in enumerate(word_ids):
                if word is not None and word not in first:
                    first[word] = k
            # Words the tokenizer maps to nothing (e.g. control characters) become [UNK].
            pieces: list[int] = []
            word_start: list[int] = []
            for w in range(len(sentence.words)):
                word_start.append(1 + len(pieces))
                if w in first:
                    end = next(
                        (first[v] for v in range(w + 1, len(sentence.words)) if v in first),
                        len(ids),
                    )
                    pieces.extend(ids[first[w] : end])
                else:
                    pieces.append(info.unk_id)
            rows.append(cls_sep(pieces, L, info))
            n_truncated += len(pieces) > L - 2 or len(sentence.words) > W
            m = min(len(sentence.words), W)
            n_words[i] = m
            starts[i, :m] = np.minimum(word_start[:m], L - 1)
            gold[i, :m] = tag_ids[:m]
            for etype, s, e in bio_entities([self.tags[t] for t in tag_ids[:m]]):
                end_start[i, e], end_type[i, e] = s, types.index(etype)
                n_gold[i] += 1
        arrays = {
            **self.row_arrays(rows),
            "starts": starts,
            "gold": gold,
            "end_start": end_start,
            "end_type": end_type,
            "n_words": n_words,
            "n_gold": n_gold,
        }
        return arrays, {"n_examples": n, "n_truncated": n_truncated}

    def _tables(self) -> None:
        types = entity_types(self.tags)
        self.mask_table_i8 = self.mask_table.astype(np.int8)
        self.tag_type = np.array(
            [-1 if t == "O" else types.index(t[2:]) for t in self.tags], dtype=np.int32
        )
        self.tag_is_b = np.array([t.startswith("B-") for t in self.tags])
        self.tag_is_i = np.array([t.startswith("I-") for t in self.tags])

    # -- batched transitions -----------------------------------------------------------------
    def init_state(self, batch_size: int) -> State:
        n, W = batch_size, self.max_words
        return {
            **self.row_state(n),
            "t": np.zeros(n, dtype=np.int32),
            "n_words": np.ones(n, dtype=np.int32),
            "position": np.zeros((n, 1), dtype=np.int32),
            "prev_tags": np.full((n, W), -1, dtype=np.int32),
            "last": np.full(n, -1, dtype=np.int32),
            "open_start": np.full(n, -1, dtype=np.int32),
            "open_type": np.full(n, -1, dtype=np.int32),
            "tp": np.zeros(n, dtype=np.int32),
            "n_pred": np.zeros(n, dtype=np.int32),
            "n_gold": np.zeros(n, dtype=np.int32),
            "correct": np.zeros(n, dtype=np.int32),
            "f1": np.zeros(n, dtype=np.float32),
        }

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        d = self.data
        self.load_rows(state, slots, example_ids)
        state["n_words"][slots] = d["n_words"][example_ids]
        state["n_gold"][slots] = d["n_gold"][example_ids]
        state["position"][slots, 0] = d["starts"][example_ids, 0]
        state["prev_tags"][slots] = -1
        for key in ("t", "tp", "n_pred", "correct"):
            state[key][slots] = 0
        for key in ("last", "open_start", "open_type"):
            state[key][slots] = -1
        state["f1"][slots] = 0.0

    def step(self, state: State, actions: np.ndarray, slots: np.ndarray | None = None):
        # Hot path of the vector env: with slots=None every ``state[k][s]`` is a view updated
        # in place; with slots it is a copy, written back at the end. Gathers from the data go
        # through flat ``take`` (cheaper than 2-D fancy indexing), and the entity match checks
        # run only on the slots where an entity closes.
        s = sel(slots)
        W = self.max_words
        ex, t, n_words = state["example"][s], state["t"][s], state["n_words"][s]
        row = ex * W
        gold = self.data["gold"].reshape(-1).take(row + t)
        hit = actions == gold
        correct = state["correct"][s]
        correct += hit
        prev_tags = state["prev_tags"]
        if slots is None and prev_tags.flags.c_contiguous:
            prev_tags.reshape(-1)[row_starts(len(ex), W) + t] = actions
        else:
            prev_tags[np.arange(len(ex)) if slots is None else slots, t] = actions
        state["last"][s] = actions

        # Entity bookkeeping with conlleval/seqeval chunk semantics (see metrics.bio_entities).
        a_type = self.tag_type.take(actions)
        is_o = a_type < 0
        open_start, open_type = state["open_start"][s], state["open_type"][s]
        starts_new = self.tag_is_b.take(actions) | (
            self.tag_is_i.take(actions) & (open_type != a_type)
        )
        closes = (open_start >= 0) & (is_o | starts_new)
        tp, n_pred = state["tp"][s], state["n_pred"][s]
        if self.reward_mode == "entity":  # entities closed and matched before this step
            tp_before, n_pred_before = tp.copy(), n_pred.copy()
        n_pred += closes
        self._add_matches(tp, closes, row, t - 1, open_start, open_type)
        np.copyto(open_start, -1, where=is_o)
        np.copyto(open_start, t, where=starts_new)
        np.copyto(open_type, -1, where=is_o)
        np.copyto(open_type, a_type, where=starts_new)
        t += 1
        terminated = t >= n_words
        final_open = terminated & (open_start >= 0)
        n_pred += final_open
        self._add_matches(tp, final_open, row, t - 1, open_start, open_type)
        next_start = self.data["starts"].reshape(-1).take(row + np.minimum(t, W - 1))
        next_start[terminated] = 0
        state["position"][s, 0] = next_start
        write_back(state, slots, t=t, correct=correct, tp=tp, n_pred=n_pred)
        write_back(state, slots, open_start=open_start, open_type=open_type)

        if self.reward_mode == "token":
            reward = hit.astype(np.float32)
        elif self.reward_mode == "balanced":
            reward = np.where(hit, self.tag_weights.take(gold), np.float32(0.0))
        elif self.reward_mode == "entity":
            matched, closed = tp - tp_before, n_pred - n_pred_before
            reward = (matched - self.entity_cost * (closed - matched)).astype(np.float32)
        else:
            n_gold = state["n_gold"][s]
            denom = n_pred + n_gold
            f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0).astype(np.float32)
            f1 = np.where(terminated & (denom == 0), 1.0, f1).astype(np.float32)
            reward = f1 - state["f1"][s]
            state["f1"][s] = f1
        return reward, terminated, np.zeros_like(terminated)

    def _add_matches(
        self,
        tp: np.ndarray,
        where: np.ndarray,
        row: np.ndarray,
        end: np.ndarray,
        start: np.ndarray,
        etype: np.ndarray,
    ) -> None:
        """``tp[i] += 1`` where ``where[i]`` and the entity ``(start, end, etype)`` is gold."""
        i = np.flatnonzero(where)
        if len(i):
            tp[i] += self._matches_flat(row[i], end[i], start[i], etype[i])

    def _matches_flat(
        self, row: np.ndarray, end: np.ndarray, start: np.ndarray, etype: np.ndarray
    ) -> np.ndarray:
        flat = row + np.clip(end, 0, self.max_words - 1)
        gold_start = self.data["end_start"].reshape(-1).take(flat)
        gold_type = self.data["end_type"].reshape(-1).take(flat)
        return (gold_start == start) & (gold_type == etype) & (start >= 0)

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        s = sel(slots)
        return {
            **self.row_observation(state, slots),
            "position": state["position"][s],
            "prev_tags": state["prev_tags"][s],
            "action_mask": self.mask_table_i8[state["last"][s] + 1],
        }

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        return self.mask_table[state["last"][sel(slots)] + 1]

    def expert_actions(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        s = sel(slots)
        t = np.minimum(state["t"][s], state["n_words"][s] - 1)
        return self.data["gold"][state["example"][s], t]

    # -- scoring ------------------------------------------------------------------------------
    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        tp, n_pred, n_gold = state["tp"][slots], state["n_pred"][slots], state["n_gold"][slots]
        denom = n_pred + n_gold
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)
        accuracy = state["correct"][slots] / np.maximum(state["n_words"][slots], 1)
        return {"entity_f1": f1.astype(np.float64), "token_accuracy": accuracy.astype(np.float64)}

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        n = int(state["n_words"][slot])
        ex = int(state["example"][slot])
        return {
            "example_id": ex,
            "pred": [self.tags[t] if t >= 0 else "O" for t in state["prev_tags"][slot, :n]],
            "gold": [self.tags[t] for t in self.data["gold"][ex, :n]],
        }

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return entity_scores([r["gold"] for r in records], [r["pred"] for r in records])

    def render_text(self, state: State, slot: int) -> str:
        ex, t = int(state["example"][slot]), int(state["t"][slot])
        words = self.sentences()[ex].words[: int(state["n_words"][slot])]
        gold = [self.tags[g] for g in self.data["gold"][ex, : len(words)]]
        pred = [self.tags[p] if p >= 0 else "" for p in state["prev_tags"][slot, : len(words)]]
        widths = [max(len(w), len(g), len(p)) for w, g, p in zip(words, gold, pred, strict=True)]
        cursor = ["^" * widths[i] if i == t else " " * widths[i] for i in range(len(words))]
        lines = [
            "word " + " ".join(w.ljust(n) for w, n in zip(words, widths, strict=True)),
            "gold " + " ".join(g.ljust(n) for g, n in zip(gold, widths, strict=True)),
            "pred " + " ".join(p.ljust(n) for p, n in zip(pred, widths, strict=True)),
            "     " + " ".join(cursor),
        ]
        return "\n".join(line.rstrip() for line in lines)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tags": len(self.tags), "truncated": self.n_truncated}


class NEREnv(LmgymEnv):
    """Named-entity recognition as sequential tagging (CoNLL-2003 by default).

    ## Description
    One sentence per episode. At step ``t`` the agent tags word ``t`` with a BIO tag;
    the observation shows the whole sentence (sub-word ids), a pointer to the word being
    tagged and the tags chosen so far. Scored with seqeval's entity-level F1.

    ## Action Space
    ``Discrete(n_tags)``: an index into ``env.unwrapped.core.tags`` (CoNLL-2003:
    ``O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC``).

    ## Observation Space
    | key | dtype | shape | meaning |
    |---|---|---|---|
    | input_ids | int32 | (max_length,) | ``[CLS]`` sentence sub-words ``[SEP]``, padded with the pad id |
    | attention_mask | int8 | (max_length,) | 1 on real tokens |
    | position | int32 | (1,) | index of the first sub-word of the word being tagged (0 once done) |
    | prev_tags | int32 | (max_words,) | tags chosen so far, one per word; -1 = not yet / padding |
    | action_mask | int8 | (n_tags,) | 1 for valid tags (``bio_mask``: I-X only after B-X/I-X) |

    ## Rewards
    ``reward_mode="token"``: +1 when the tag equals the gold tag, else 0 (optimum = number
    of words). On CoNLL-2003 83% of tags are ``O``, so "always ``O``" earns most of that
    and is the optimum a policy finds first. ``reward_mode="balanced"``: a correct tag
    earns its class weight ``1 / (K p(tag))`` from the training split's tag shares
    (``env.unwrapped.core.tag_weights``; ``O`` 0.13 and ``B-MISC`` 6.4 on CoNLL-2003), so the
    expert still earns 1 per word on average but "always ``O``" only ``1 / K``; the optimum
    is unchanged (the gold tag), only the pull of the frequent tag goes. ``reward_mode="f1"``: the change in the sentence's entity F1 over entities
    closed so far, so an episode's rewards sum to its sentence F1 (optimum 1.0; a sentence
    without gold entities scores 1 if no entity is predicted). Sentence F1 is not the corpus
    F1 the env is scored by: in a sentence with no correct entity, wrong ones cost nothing.
    ``reward_mode="entity"``: each predicted entity, when it closes, earns 1 if it is a gold
    entity (span and type) and ``-entity_cost`` otherwise, the per-entity change of corpus
    F1 = 2 TP / (predicted + gold) at F1 ``F`` for ``entity_cost = F / (2 - F)`` (default 1/3,
    F = 0.5): an entity is worth predicting iff its chance of being right exceeds
    ``entity_cost / (1 + entity_cost)``, corpus F1's own threshold ``F / 2``; "always ``O``"
    earns 0 (optimum: the number of gold entities). Masked actions are not refused: they
    are applied and scored like any other tag.

    ## Starting State
    A sentence drawn uniformly from the split (``shuffle=True``) or the next one in order.

    ## Episode End
    Termination: every word is tagged. There is no truncation.
    ``info["episode_metrics"]`` then holds ``entity_f1`` (sentence) and ``token_accuracy``.

    ## Arguments
    ``split`` (train/validation/test), ``data_dir``, ``data_files`` (CoNLL files of your
    own: a path or ``{split: path}``), ``tokenizer`` (None = WordPiece trained on train,
    ``"minilm"``, a path, a tokenizer object), ``max_length=128``, ``max_words=128``,
    ``reward_mode``, ``balance_power=1.0`` (``"balanced"``: weights ``p(tag) ** -power``,
    rescaled), ``entity_cost=1/3`` (``"entity"``: the cost of a wrong entity),
    ``bio_mask=True``, ``shuffle=True``, ``render_mode`` (ansi/human),
    ``augment`` (off by default; ``{"mask": p}`` masks training sentences' sub-words with
    probability ``p``, :mod:`lmgym.envs.augment`; ignored on other splits).
    Sentences longer than ``max_words`` words are tagged up to ``max_words`` only; words whose
    first sub-word falls past ``max_length - 2`` point at the last position (both are counted
    in ``env.unwrapped.core.n_truncated``; none on CoNLL-2003 with the defaults).

    >>> import gymnasium as gym, lmgym
    >>> env = gym.make("lmgym/NER-v0", data_dir="sample")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs)
    ['action_mask', 'attention_mask', 'input_ids', 'position', 'prev_tags']
    >>> env.unwrapped.core.tags[:3]  # action i tags the word at ``position`` with tags[i]
    ('O', 'B-PER', 'I-PER')

    ## Version History
    * v0: initial release; ``reward_mode="balanced"`` and ``"entity"`` added later (default
      unchanged).
    """

    core_class = NERCore


NERVectorEnv = vector_env(NEREnv)


__all__ = ["CONLL2003_TAGS", "NERCore", "NEREnv", "NERVectorEnv", "LmgymDataError", "Path"]

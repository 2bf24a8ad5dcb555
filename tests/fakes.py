"""Tiny fake lmgym envs for the agents' tests (no data, no tokenizer, milliseconds per step).

They live in ``tests/`` (not in the installed ``agents`` package): a test that trains on
one through ``agents.train`` calls :func:`register_fake_envs` first, as any user
registers their own env before passing its id to ``lmgym train``.

Each env has the observation keys of its family exactly as in ``docs/ARCHITECTURE.md``
(``Dict`` of 1-D integer ``Box``es) and the shared API (``action_masks()``,
``expert_action()``), with a tiny vocabulary and a task a small transformer can learn in
a few thousand steps. Token ids: 0 = pad, 1 = ``[CLS]``, 2 = ``[SEP]``, 3 = marker.

:func:`register_fake_envs` registers them as ``agents_testing/Fake<Family>-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PAD, CLS, SEP, MARK = 0, 1, 2, 3
FIRST_WORD = 4


def _box(high: int, size: int, low: int = 0, dtype: type = np.int32) -> spaces.Box:
    return spaces.Box(low=low, high=high, shape=(size,), dtype=dtype)


class FakeEnv(gym.Env):
    """Shared plumbing: ``reset``/``step`` over ``_new_episode``/``_apply``/``_obs``."""

    metadata: dict[str, Any] = {"render_modes": []}
    family = ""

    def __init__(self, vocab_size: int = 32, max_length: int = 12) -> None:
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.tokenizer = None

    def _define_spaces(self, n_actions: int, **entries: spaces.Box) -> None:
        """``Discrete(n_actions)`` and the lmgym observation layout: token rows of
        ``max_length``, the family's ``entries``, ``action_mask`` (as ``define_spaces``)."""
        self.action_space = spaces.Discrete(n_actions)
        self.observation_space = spaces.Dict(
            {
                "input_ids": _box(self.vocab_size - 1, self.max_length),
                "attention_mask": _box(1, self.max_length, dtype=np.int8),
                **entries,
                "action_mask": _box(1, n_actions, dtype=np.int8),
            }
        )

    # subclasses -------------------------------------------------------------------
    def _new_episode(self) -> None:
        raise NotImplementedError

    def _apply(self, action: int) -> tuple[float, bool]:
        raise NotImplementedError

    def _obs(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def action_masks(self) -> np.ndarray:
        return np.ones(self.action_space.n, dtype=bool)

    def expert_action(self) -> int:
        raise NotImplementedError

    def _observation(self, **entries: np.ndarray) -> dict[str, np.ndarray]:
        """The observation of ``self.tokens``: token rows, the family's ``entries`` and
        ``action_mask`` (the layout :meth:`_define_spaces` declares)."""
        ids, mask = self._ids(self.tokens)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            **entries,
            "action_mask": self.action_masks().astype(np.int8),
        }

    # gym API ----------------------------------------------------------------------
    def _ids(self, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros(self.max_length, dtype=np.int32)
        ids[: len(tokens)] = tokens
        mask = (np.arange(self.max_length) < len(tokens)).astype(np.int8)
        return ids, mask

    def _words(self, n: int, low: int = FIRST_WORD) -> list[int]:
        return [int(t) for t in self.np_random.integers(low, self.vocab_size, size=n)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.done = False
        self.score = 0.0
        self._new_episode()
        return self._obs(), {}

    def step(self, action: Any):
        assert not self.done, "episode is over: call reset()"
        reward, terminated = self._apply(int(action))
        self.score += reward
        self.done = terminated
        info: dict[str, Any] = {}
        if terminated:
            info["episode_metrics"] = {"score": self.score}
        return self._obs(), float(reward), terminated, False, info


class FakeClassificationEnv(FakeEnv):
    """One step: the label is the index of the keyword token (``FIRST_WORD + label``) in the sentence."""

    family = "classification"

    def __init__(self, n_labels: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_labels = n_labels
        self._define_spaces(n_labels)

    def _new_episode(self) -> None:
        self.label = int(self.np_random.integers(self.n_labels))
        n = int(self.np_random.integers(3, self.max_length - 1))
        words = self._words(n, low=FIRST_WORD + self.n_labels)
        words[int(self.np_random.integers(n))] = FIRST_WORD + self.label
        self.tokens = [CLS, *words, SEP]

    def _obs(self) -> dict[str, np.ndarray]:
        return self._observation()

    def _apply(self, action: int) -> tuple[float, bool]:
        return float(action == self.label), True

    def expert_action(self) -> int:
        return self.label


class FakeNEREnv(FakeEnv):
    """One step per word (one token each): the gold tag is ``(token - FIRST_WORD) % n_tags``; +1 per correct tag."""

    family = "ner"

    def __init__(self, n_tags: int = 3, max_words: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_tags, self.max_words = n_tags, max_words
        self._define_spaces(
            n_tags,
            position=_box(self.max_length - 1, 1),
            prev_tags=_box(n_tags - 1, max_words, low=-1),
        )

    def _new_episode(self) -> None:
        n = int(self.np_random.integers(2, min(self.max_words, self.max_length - 2) + 1))
        self.words = self._words(n)
        self.gold = [(w - FIRST_WORD) % self.n_tags for w in self.words]
        self.tokens = [CLS, *self.words, SEP]
        self.t = 0
        self.prev = np.full(self.max_words, -1, dtype=np.int32)

    def _obs(self) -> dict[str, np.ndarray]:
        position = np.array([0 if self.done else 1 + self.t], dtype=np.int32)
        return self._observation(
            position=position,
            prev_tags=self.prev.copy(),
        )

    def _apply(self, action: int) -> tuple[float, bool]:
        reward = float(action == self.gold[self.t])
        self.prev[self.t] = action
        self.t += 1
        return reward, self.t == len(self.words)

    def expert_action(self) -> int:
        return self.gold[self.t]


class FakeQAEnv(FakeEnv):
    """``[CLS] q [SEP] context``: the answer starts after the marker token; its length is 1 if
    ``q`` is even else 2. Stage 0 picks the start, stage 1 the end (+0.5 each when right)."""

    family = "qa"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        L = self.max_length
        self._define_spaces(
            L,
            token_type_ids=_box(1, L, dtype=np.int8),
            stage=_box(1, 1),
            start=_box(L - 1, 1, low=-1),
        )

    def _new_episode(self) -> None:
        q = int(self.np_random.integers(FIRST_WORD, self.vocab_size))
        length = 1 if q % 2 == 0 else 2
        n_ctx = int(self.np_random.integers(length + 2, self.max_length - 3 + 1))
        context = self._words(n_ctx)
        mark = int(self.np_random.integers(0, n_ctx - length))
        context[mark] = MARK
        self.tokens = [CLS, q, SEP, *context]
        self.context_start = 3
        self.gold_start = 3 + mark + 1
        self.gold_end = self.gold_start + length - 1
        self.stage, self.start = 0, -1

    def _obs(self) -> dict[str, np.ndarray]:
        types = np.zeros(self.max_length, dtype=np.int8)
        types[self.context_start : len(self.tokens)] = 1
        return self._observation(
            token_type_ids=types,
            stage=np.array([self.stage], dtype=np.int32),
            start=np.array([self.start], dtype=np.int32),
        )

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(self.max_length, dtype=bool)
        lo = self.context_start if self.stage == 0 else max(self.start, self.context_start)
        mask[lo : len(self.tokens)] = True
        return mask

    def _apply(self, action: int) -> tuple[float, bool]:
        if self.stage == 0:
            self.stage, self.start = 1, action
            return 0.5 * float(action == self.gold_start), False
        return 0.5 * float(action == self.gold_end and self.start == self.gold_start), True

    def expert_action(self) -> int:
        return self.gold_start if self.stage == 0 else self.gold_end


class FakeMultipleChoiceEnv(FakeEnv):
    """``[CLS] k [SEP] o1a o1b [SEP] o2a o2b ...``: the right option starts with ``k``."""

    family = "multiple_choice"

    def __init__(self, max_choices: int = 3, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 3 + 3 * max_choices)
        super().__init__(**kwargs)
        self.max_choices = max_choices
        self._define_spaces(
            max_choices,
            token_type_ids=_box(1, self.max_length, dtype=np.int8),
            choice_positions=_box(self.max_length - 1, max_choices, low=-1),
        )

    def _new_episode(self) -> None:
        self.n_choices = int(self.np_random.integers(2, self.max_choices + 1))
        firsts = self.np_random.choice(
            np.arange(FIRST_WORD, self.vocab_size), self.n_choices, replace=False
        )
        self.answer = int(self.np_random.integers(self.n_choices))
        tokens = [CLS, int(firsts[self.answer]), SEP]
        self.positions = np.full(self.max_choices, -1, dtype=np.int32)
        for c in range(self.n_choices):
            self.positions[c] = len(tokens)
            tokens += [int(firsts[c]), *self._words(1), SEP]
        self.tokens = tokens

    def _obs(self) -> dict[str, np.ndarray]:
        types = np.zeros(self.max_length, dtype=np.int8)
        types[3 : len(self.tokens)] = 1
        return self._observation(
            token_type_ids=types,
            choice_positions=self.positions.copy(),
        )

    def action_masks(self) -> np.ndarray:
        return np.arange(self.max_choices) < self.n_choices

    def _apply(self, action: int) -> tuple[float, bool]:
        return float(action == self.answer), True

    def expert_action(self) -> int:
        return self.answer


class FakeTranslationEnv(FakeEnv):
    """Target token ``j`` = ``2 + source_j % (V - 2)``, then EOS (id 1); +1 per correct token
    (position-wise), ends at EOS or ``max_target_length``. Target id 0 (pad) is invalid."""

    family = "translation"
    EOS = 1

    def __init__(self, target_vocab: int = 8, max_target_length: int = 6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_vocab, self.T = target_vocab, max_target_length
        self._define_spaces(
            target_vocab,
            target_ids=_box(target_vocab - 1, max_target_length),
            target_mask=_box(1, max_target_length, dtype=np.int8),
        )

    def _new_episode(self) -> None:
        n = int(self.np_random.integers(1, min(self.T - 1, self.max_length - 2) + 1))
        self.source = self._words(n)
        self.gold = [2 + s % (self.target_vocab - 2) for s in self.source] + [self.EOS]
        self.tokens = [CLS, *self.source, SEP]
        self.written: list[int] = []

    def _obs(self) -> dict[str, np.ndarray]:
        target = np.zeros(self.T, dtype=np.int32)
        target[: len(self.written)] = self.written
        target_mask = (np.arange(self.T) < len(self.written)).astype(np.int8)
        return self._observation(
            target_ids=target,
            target_mask=target_mask,
        )

    def action_masks(self) -> np.ndarray:
        mask = np.ones(self.target_vocab, dtype=bool)
        mask[0] = False
        return mask

    def _apply(self, action: int) -> tuple[float, bool]:
        t = len(self.written)
        reward = float(t < len(self.gold) and action == self.gold[t])
        self.written.append(action)
        return reward, action == self.EOS or len(self.written) >= self.T

    def expert_action(self) -> int:
        t = len(self.written)
        return self.gold[t] if t < len(self.gold) else self.EOS


class FakeMultiTaskEnv(FakeEnv):
    """Each episode samples one of the fake tasks; observations are the union of their keys
    plus ``task_id``, actions are ``Discrete(max_actions)`` (unused ids masked)."""

    family = "multitask"

    def __init__(
        self,
        families: tuple[str, ...] = (
            "classification",
            "ner",
            "qa",
            "translation",
            "multiple_choice",
        ),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.envs = [
            FAKE_ENVS[f](vocab_size=self.vocab_size, max_length=self.max_length) for f in families
        ]
        self.task_families = list(families)
        self.task_n_actions = [int(env.action_space.n) for env in self.envs]
        self.max_actions = max(self.task_n_actions)
        self.action_space = spaces.Discrete(self.max_actions)
        merged: dict[str, spaces.Box] = {}
        for env in self.envs:
            for key, space in env.observation_space.spaces.items():
                if key == "action_mask":
                    continue
                merged.setdefault(key, space)
        merged["action_mask"] = _box(1, self.max_actions, dtype=np.int8)
        merged["task_id"] = _box(len(self.envs) - 1, 1)
        self.observation_space = spaces.Dict(merged)

    def _new_episode(self) -> None:
        self.task = int(self.np_random.integers(len(self.envs)))
        self.env = self.envs[self.task]
        self.env.reset(seed=int(self.np_random.integers(2**31)))

    def _obs(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        inner = self.env._obs()
        for key, space in self.observation_space.spaces.items():
            if key in inner and key != "action_mask":
                obs[key] = inner[key]
            else:
                fill = -1 if space.low.min() < 0 else 0
                obs[key] = np.full(space.shape, fill, dtype=space.dtype)
        obs["action_mask"] = self.action_masks().astype(np.int8)
        obs["task_id"] = np.array([self.task], dtype=np.int32)
        return obs

    def action_masks(self) -> np.ndarray:
        mask = np.zeros(self.max_actions, dtype=bool)
        inner = self.env.action_masks()
        mask[: len(inner)] = inner
        return mask

    def _apply(self, action: int) -> tuple[float, bool]:
        if action >= self.env.action_space.n:
            return 0.0, True  # out of this task's range: episode over, no reward
        _, reward, terminated, _, _ = self.env.step(action)
        return reward, terminated

    def expert_action(self) -> int:
        return self.env.expert_action()


FAKE_ENVS: dict[str, type[FakeEnv]] = {
    "classification": FakeClassificationEnv,
    "ner": FakeNEREnv,
    "qa": FakeQAEnv,
    "translation": FakeTranslationEnv,
    "multiple_choice": FakeMultipleChoiceEnv,
    "multitask": FakeMultiTaskEnv,
}

FAKE_IDS: dict[str, str] = {
    "classification": "agents_testing/FakeClassification-v0",
    "ner": "agents_testing/FakeNER-v0",
    "qa": "agents_testing/FakeQA-v0",
    "translation": "agents_testing/FakeTranslation-v0",
    "multiple_choice": "agents_testing/FakeMultipleChoice-v0",
    "multitask": "agents_testing/FakeMultiTask-v0",
}


def register_fake_envs() -> None:
    """Register the fakes as ``agents_testing/Fake<Family>-v0`` (idempotent)."""
    for family, env_id in FAKE_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=f"{__name__}:{FAKE_ENVS[family].__name__}",
                max_episode_steps=50,
            )


def random_score(env: FakeEnv, episodes: int = 200, seed: int = 0, masked: bool = True) -> float:
    """Mean episode return of a uniformly random (valid-action) policy."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        done = False
        while not done:
            valid = np.flatnonzero(env.action_masks()) if masked else np.arange(env.action_space.n)
            _, reward, terminated, truncated, _ = env.step(int(rng.choice(valid)))
            total += reward
            done = terminated or truncated
    return total / episodes

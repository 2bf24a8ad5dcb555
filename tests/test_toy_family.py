"""A new task family is one short module on :class:`lmgym.envs.dataset.DatasetCore`.

The toy family tags each word of a CoNLL sentence 1 if it is capitalised, else 0 (a
stand-in for POS tagging). It writes only what is its own (how a record becomes rows, the
transition and reward, the scores); data, tokenizer, cache, seeding, vector env and
autoreset come from the base. It must pass Gymnasium's checker and equal
``SyncVectorEnv`` exactly, like every registered lmgym env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import State, int_box, sel
from lmgym.envs.dataset import DatasetCore, cls_sep, pad_rows
from lmgym.envs.tagging import conll_source
from tests.test_vector import rollout_equal


class CapsCore(DatasetCore):
    family = "caps"

    def __init__(self, split: str = "train", data_dir: Any = None, max_length: int = 32) -> None:
        self.max_length = max_length
        train = self.open_split(lambda s: conll_source("conll2003", None, s, data_dir, -1), split)
        self.fit_tokenizer(
            None, lambda: (" ".join(s.words) for s in train.load()), train.digest, 400
        )
        self.load_arrays(
            "toy_caps", "caps", self._source.digest, self.token_info.digest, max_length
        )
        self.single_action_space = spaces.Discrete(2)
        self.single_observation_space = spaces.Dict(
            {**self.row_spaces(), "position": int_box(max_length - 1, (1,))}
        )

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        sentences, L, info = self.records(), self.max_length, self.token_info
        words = [s.words[: L - 2] for s in sentences]
        encodings = self.tokenizer.encode_batch([list(w) for w in words], is_pretokenized=True)
        rows, gold = [], np.zeros((len(words), L), dtype=np.int32)
        for i, (ws, enc) in enumerate(zip(words, encodings, strict=True)):
            first = {w: enc.ids[k] for k, w in reversed(list(enumerate(enc.word_ids)))}
            rows.append(cls_sep([first.get(w, info.unk_id) for w in range(len(ws))], L, info))
            gold[i, : len(ws)] = [w[:1].isupper() for w in ws]
        input_ids, lengths = pad_rows(rows, L, info.pad_id)
        return {"input_ids": input_ids, "lengths": lengths, "gold": gold}, {"n_examples": len(rows)}

    def init_state(self, batch_size: int) -> State:
        zeros = {k: np.zeros(batch_size, dtype=np.int32) for k in ("t", "correct")}
        return {**self.row_state(batch_size), **zeros}

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        self.load_rows(state, slots, example_ids)
        state["t"][slots] = state["correct"][slots] = 0

    def step(self, state: State, actions: np.ndarray, slots: np.ndarray | None = None):
        s = sel(slots)
        hit = actions == self.expert_actions(state, slots)
        state["correct"][s] += hit
        state["t"][s] += 1
        done = state["t"][s] >= self.data["lengths"][state["example"][s]] - 2
        return hit.astype(np.float32), done, np.zeros_like(done)

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {**self.row_observation(state, slots), "position": state["t"][sel(slots), None] + 1}

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        return np.ones((len(state["t"][sel(slots)]), 2), dtype=bool)

    def expert_actions(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        s = sel(slots)
        return self.data["gold"][state["example"][s], state["t"][s]].astype(np.int64)

    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        n = self.data["lengths"][state["example"][slots]] - 2
        return {"accuracy": state["correct"][slots] / np.maximum(n, 1)}

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        return {"accuracy": float(self.episode_metrics(state, np.array([slot]))["accuracy"][0])}

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return {"accuracy": float(np.mean([r["accuracy"] for r in records]))}

    def render_text(self, state: State, slot: int) -> str:
        return " ".join(self.records()[int(state["example"][slot])].words)


class CapsEnv(LmgymEnv):
    """Tag each word 1 if capitalised (a toy family for the tests)."""

    core_class = CapsCore


CapsVectorEnv = vector_env(CapsEnv)
gym.register("toy/Caps-v0", entry_point=CapsEnv, vector_entry_point=CapsVectorEnv)


def test_toy_family_passes_gymnasium_check_env():
    env = gym.make("toy/Caps-v0", data_dir="sample")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.family == "caps" and env.unwrapped.metric is None


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_toy_family_vector_env_equals_sync(mode):
    make = dict(num_envs=3, data_dir="sample")
    native = gym.make_vec(
        "toy/Caps-v0", vectorization_mode="vector_entry_point", autoreset_mode=mode, **make
    )
    sync = gym.make_vec(
        "toy/Caps-v0", vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **make
    )
    assert isinstance(native.unwrapped, CapsVectorEnv)
    assert rollout_equal(native, sync, 80, seed=3) >= 3

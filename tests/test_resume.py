"""Determinism and exact resume of ``agents.train`` (tiny backbone, sample data, one thread).

Same seed, same CPU, same library versions: two runs write the same ``progress.csv`` and
the same weights; a run stopped at a checkpoint and resumed equals the run that never
stopped. (``tests/test_reliability.py`` kills a run with SIGKILL and checks the same.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from agents import load_model, save_model  # noqa: E402
from agents import resume as resume_module  # noqa: E402
from agents.train import main as train  # noqa: E402
from lmgym.sb3 import make_vec_env  # noqa: E402

#: wall-clock columns; everything else must match
CLOCK = ("time/fps", "time/time_elapsed", "time/iterations")
MICRO = "policy_kwargs={backbone_kwargs: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}, net_arch: {pi: [32], vf: [32]}}"
ALGO_HP = {
    "ppo": ["n_steps=32", "batch_size=32", "n_epochs=2"],
    "maskable_ppo": ["n_steps=32", "batch_size=32", "n_epochs=2"],
    "a2c": ["n_steps=32"],
    "trpo": ["n_steps=32", "batch_size=32"],
    "reinforce": ["n_steps=32"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def argv(log_dir: Path, run: str, algo: str, total: int, *extra: str) -> list[str]:
    hp = [x for item in ALGO_HP[algo] for x in ("--hp", item)]
    return ["lmgym/SST2-v0", "--algo", algo, "--data-dir", "sample", "--backbone", "tiny",
            "--n-envs", "2", "--seed", "3", "--eval-freq", "-1", "--log-dir", str(log_dir),
            "--run-name", run, "--total-timesteps", str(total), "--verbose", "0",
            "--no-progress-bar", "--hp", MICRO, "--log-interval", "1", *hp, *extra]  # fmt: skip


def curve(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv") as f:
        return [{k: v for k, v in row.items() if k not in CLOCK} for row in csv.DictReader(f)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path, device="cpu")[0].policy.state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, different[:5]


def test_same_seed_gives_identical_training_curves_and_weights(tmp_path):
    assert train(argv(tmp_path, "a", "ppo", 192)) == 0
    assert train(argv(tmp_path, "b", "ppo", 192)) == 0
    first = curve(tmp_path / "a")
    assert len(first) == 3 and first[-1]["train/loss"] != ""
    assert first == curve(tmp_path / "b")
    assert_same_weights(tmp_path / "a" / "model.zip", tmp_path / "b" / "model.zip")
    # and a different seed does not
    assert train([*argv(tmp_path, "c", "ppo", 192), "--seed", "4"]) == 0
    assert curve(tmp_path / "c") != first


@pytest.mark.parametrize("algo", sorted(ALGO_HP))
def test_stopped_and_resumed_run_equals_the_uninterrupted_run(algo, tmp_path):
    assert train(argv(tmp_path, "whole", algo, 256)) == 0
    assert train(argv(tmp_path, "parts", algo, 128)) == 0
    assert load_model(tmp_path / "parts" / "model.zip")[0].num_timesteps == 128
    resumed = [*argv(tmp_path, "parts", algo, 256), "--resume"]
    resumed += ["--save-path", str(tmp_path / "parts" / "model.zip")]
    assert train(resumed) == 0
    whole, parts = curve(tmp_path / "whole"), curve(tmp_path / "parts")
    assert len(whole) == 4 and [r["time/total_timesteps"] for r in parts] == [
        "64",
        "128",
        "192",
        "256",
    ]
    assert parts == whole
    assert_same_weights(tmp_path / "whole" / "model.zip", tmp_path / "parts" / "model.zip")


def test_a_checkpoint_taken_before_any_env_step_resumes_exactly(tmp_path):
    # the leaderboard's warm start saves at 0 env steps and resumes for the RL phase: the
    # env's first reset must use the run's seeds, not fresh entropy (it once did)
    assert train(argv(tmp_path, "whole", "ppo", 128, "--warm-start", "16")) == 0
    assert train(argv(tmp_path, "parts", "ppo", 0, "--warm-start", "16")) == 0
    resumed = [*argv(tmp_path, "parts", "ppo", 128), "--resume"]
    resumed += ["--save-path", str(tmp_path / "parts" / "model.zip")]
    assert train(resumed) == 0
    assert curve(tmp_path / "parts") == curve(tmp_path / "whole")
    assert_same_weights(tmp_path / "whole" / "model.zip", tmp_path / "parts" / "model.zip")


def test_vec_env_state_keeps_the_seeds_pending_for_the_first_reset():
    a = make_vec_env("lmgym/TREC-v0", n_envs=3, seed=5, data_dir="sample")
    saved = a.get_state()
    b = make_vec_env("lmgym/TREC-v0", n_envs=3, data_dir="sample")
    b.set_state(saved)
    oa, ob = a.reset(), b.reset()
    for key in oa:
        np.testing.assert_array_equal(oa[key], ob[key])


def test_checkpoint_holds_the_env_episodes_and_the_random_streams(tmp_path):
    assert train([*argv(tmp_path, "r", "ppo", 64)]) == 0
    model, _ = load_model(tmp_path / "r" / "model.zip", device="cpu")
    assert resume_module.resumable(model) is None
    state = getattr(model, resume_module.RESUME_ATTR)
    assert state["num_timesteps"] == 64 and state["env"]["env"]["num_envs"] == 2
    assert set(state["rng"]) >= {"torch", "numpy", "python", "action_space"}
    assert set(state["last_obs"]) >= {"input_ids", "attention_mask"}


def test_vec_env_state_continues_the_same_episodes_in_a_new_env():
    a = make_vec_env("lmgym/TREC-v0", n_envs=3, seed=0, data_dir="sample")
    a.reset()
    a.step(np.zeros(3, dtype=np.int64))
    saved = a.get_state()
    b = make_vec_env("lmgym/TREC-v0", n_envs=3, seed=99, data_dir="sample")
    b.set_state(saved)
    for _ in range(5):
        actions = np.array([1, 2, 3])
        oa, ra, da, _ = a.step(actions)
        ob, rb, db, _ = b.step(actions)
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)


def test_vec_env_state_refuses_a_different_env():
    saved = make_vec_env("lmgym/TREC-v0", n_envs=3, seed=0, data_dir="sample").get_state()
    with pytest.raises(ValueError, match="--n-envs 3"):
        make_vec_env("lmgym/TREC-v0", n_envs=2, data_dir="sample").set_state(saved)
    with pytest.raises(ValueError, match="same kwargs"):
        make_vec_env("lmgym/TREC-v0", n_envs=3, data_dir="sample", max_length=32).set_state(saved)


def test_resuming_a_model_without_resume_state_warns_and_keeps_the_log(tmp_path, capsys):
    assert train(argv(tmp_path, "old", "ppo", 64)) == 0
    path = tmp_path / "old" / "model.zip"
    model, meta = load_model(path, device="cpu")
    delattr(model, resume_module.RESUME_ATTR)
    save_model(model, path, env_id=meta["env_id"], make_kwargs=meta["make_kwargs"])
    rows_before = curve(tmp_path / "old")
    capsys.readouterr()
    assert train([*argv(tmp_path, "old", "ppo", 128), "--resume", "--save-path", str(path)]) == 0
    assert "no resume state" in capsys.readouterr().err
    after = curve(tmp_path / "old")
    assert after[: len(rows_before)] == rows_before and len(after) > len(rows_before)


def test_resume_with_other_n_envs_names_the_fix(tmp_path):
    assert train(argv(tmp_path, "n", "ppo", 64)) == 0
    resumed = [*argv(tmp_path, "n", "ppo", 128), "--resume", "--n-envs", "3"]
    with pytest.raises(ValueError, match="resume with --n-envs 2"):
        train([*resumed, "--save-path", str(tmp_path / "n" / "model.zip")])

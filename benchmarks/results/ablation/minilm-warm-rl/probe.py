"""Probes (2026-12-07) of the RL phase after a MiniLM NER warm start.

    cd benchmarks/results/ablation/minilm-warm-rl
    export LMGYM_DATA_DIR=../../../../../shared/data OMP_NUM_THREADS=1 PYTHONPATH=../../../..
    T="lmgym/NER-v0 --backbone minilm --seed 1 --warm-start 1024 --total-timesteps 1024
       --env-kwarg reward_mode=f1 --kl-coef 0.05 --kl-target 0.02 --eval-freq -1
       --log-dir /tmp/runs --run-name probe --pretrain-steps 0 --verbose 0 --threads 1"
    python probe.py freeze frozen $T     # the encoder stops training after the warm start
    python probe.py freeze full $T       # nothing frozen
    python probe.py critic 2048 $T       # 2,048 env steps that train only the critic first
    python probe.py advantages zero $T --anchor-coef 1.0   # the anchor without the policy
                                         # gradient (the critic still trains): its control

The arguments after the probe's own are ``agents.train``'s (``--total-timesteps``: the RL
steps). Prints one JSON line: entity F1 on the first 500 CoNLL validation sentences at the
warm start, after the critic's steps, and after every 512 env steps (one PPO rollout, then
its update). Records: ``results.jsonl``.
"""

import json
import sys

import agents.train as T


def setup(argv):
    args = T.parse_args(argv)
    T._register_envs(args.env_id)
    plan = T.resolve_hyperparams(args)
    _, run_dir, save_path = T.run_paths(args)
    venv = T.make_env(args.env_id, plan.n_envs, args.seed, plan.make_kwargs)
    policy_kwargs = T.full_policy_kwargs(args, plan, venv)
    model, _ = T.build_model(args, plan, policy_kwargs, venv, run_dir, save_path)
    T.warm_start(model, args, plan)
    score = T.make_evaluator(args.env_id, plan.make_kwargs, 500, args.seed)
    callbacks, _ = T.build_callbacks(args, plan, model, run_dir, lambda *a, **k: None, save_path)
    return model, plan, callbacks, lambda: score(model)["entity_f1"]


def main(probe, option, argv):
    model, plan, callbacks, f1 = setup(argv)
    curve, done = [(0, f1())], 0
    if probe == "freeze" and option == "frozen":
        for p in model.policy.features_extractor.parameters():
            p.requires_grad_(False)
    if probe == "critic":
        actor = [p for n, p in model.policy.named_parameters() if "value" not in n]
        for p in actor:
            p.requires_grad_(False)
        model.learn(int(option), callback=callbacks)
        for p in actor:
            p.requires_grad_(True)
        done = int(option)
        curve.append((done, f1()))
    if probe == "advantages" and option == "zero":
        from stable_baselines3.common.callbacks import BaseCallback

        class ZeroAdvantages(BaseCallback):  # after the KL callback's recomputation
            def _on_step(self):
                return True

            def _on_rollout_end(self):
                self.model.rollout_buffer.advantages[:] = 0.0

        callbacks = [*callbacks, ZeroAdvantages()]
    for _ in range(plan.total_timesteps // 512):
        model.learn(512, callback=callbacks, reset_num_timesteps=(done == 0))
        done += 512
        curve.append((done, f1()))
    key = {"freeze": "variant", "critic": "warm_critic", "advantages": "advantages"}[probe]
    value = int(option) if probe == "critic" else option
    print(json.dumps({key: value, "argv": argv, "curve": curve}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])

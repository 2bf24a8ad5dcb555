"""The encoder runs once per distinct input, and that changes no number.

``TransformerExtractor`` deduplicates identical rows of a batch and caches hidden states
across rollout steps (``agents/extractor.py``). Every algorithm trained with both on must
end with the weights it reaches with both off (float tolerance), while running the encoder
over fewer rows. The episode-grouped rollout buffer is a sampling option: it must keep
every step exactly once per epoch and hold episodes together.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")


from agents import (  # noqa: E402
    env_policy_kwargs,
)
from agents.buffers import (  # noqa: E402
    EpisodeGroupedDictRolloutBuffer,
    episode_order,
    rollout_buffer_class,
)
from lmgym.sb3 import make_vec_env  # noqa: E402
from tests.test_agents import ALGOS, MICRO  # noqa: E402  (the algorithm matrix's settings)

SAMPLE = {"data_dir": "sample"}


def _train(algo: str, env_id: str, exact: bool, steps: int = 128, **algo_kwargs):
    """Train ``algo`` from seed 0; return (weight changes, encoder rows run, model)."""
    cls, policy, kwargs = ALGOS[algo]
    make = {"tasks": {"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.5}} if "MultiTask" in env_id else {}
    venv = make_vec_env(env_id, n_envs=2, seed=0, **SAMPLE, **make)
    extractor = {} if exact else dict(dedup=False, cache=False)
    policy_kwargs = {
        **MICRO,
        **env_policy_kwargs(venv),
        "features_extractor_kwargs": extractor,
        **({"attention_backend": "math"} if algo == "trpo" else {}),
    }
    model = cls(policy, venv, seed=0, policy_kwargs=policy_kwargs, **{**kwargs, **algo_kwargs})
    initial = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    model.learn(steps)
    weights = {k: v.detach().clone() - initial[k] for k, v in model.policy.state_dict().items()}
    extractors = {id(m): m for m in model.policy.modules() if hasattr(m, "encoder_rows")}
    rows = sum(m.encoder_rows for m in extractors.values())
    return weights, rows, model


def _assert_same_weights(a: dict, b: dict) -> None:
    """The two runs moved the weights alike: their gap is < 1% of the distance travelled.

    Float rounding differs between a deduplicated and a full batch (~1e-8); PPO, A2C and
    REINFORCE stay there (~1e-6 of the distance), while TRPO's conjugate gradient and
    DQN's near-tied greedy actions amplify it to ~1e-3. A stale cache or a wrong gather
    moves the weights elsewhere entirely (a gap of the order of the distance itself).
    """
    assert a.keys() == b.keys()
    gap = torch.sqrt(sum(((a[k] - b[k]).double() ** 2).sum() for k in a))
    travelled = torch.sqrt(sum((a[k].double() ** 2).sum() for k in a))
    assert travelled > 0 and gap < 1e-2 * travelled, (float(gap), float(travelled))


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_dedup_and_cache_leave_training_unchanged(algo, one_torch_thread):
    fast, fast_rows, _ = _train(algo, "lmgym/NER-v0", exact=True)
    slow, slow_rows, _ = _train(algo, "lmgym/NER-v0", exact=False)
    _assert_same_weights(fast, slow)
    # NER's sentences span several steps: far fewer encoder rows for the same training
    assert fast_rows < 0.6 * slow_rows, (fast_rows, slow_rows)


@pytest.mark.parametrize("env_id", ["lmgym/Translation-v0", "lmgym/QA-v0", "lmgym/MultiTask-v0"])
def test_cache_is_exact_where_the_observation_changes_around_a_fixed_input(
    env_id, one_torch_thread
):
    # translation: the source stays while the written prefix grows; QA: stage and start
    # change; multitask: task ids and keys other tasks lack. Only encoder inputs key it.
    fast, fast_rows, _ = _train("ppo", env_id, exact=True, steps=64)
    slow, slow_rows, _ = _train("ppo", env_id, exact=False, steps=64)
    _assert_same_weights(fast, slow)
    assert fast_rows < slow_rows


def test_cache_never_serves_states_of_old_weights(one_torch_thread):
    _, _, model = _train("ppo", "lmgym/NER-v0", exact=True, steps=32)
    policy, extractor = model.policy, model.policy.features_extractor
    obs = {k: torch.as_tensor(v).float() for k, v in model.env.reset().items()}
    policy.set_training_mode(False)
    with torch.no_grad():
        before = extractor(obs).clone()
        rows = extractor.encoder_rows
        assert torch.equal(extractor(obs), before) and extractor.encoder_rows == rows  # cached
        for param in extractor.encoder.parameters():  # as TRPO's line search: no version bump
            param.data = param.data + 0.1 * torch.randn_like(param)
    policy.set_training_mode(True)  # every algorithm does this before changing weights
    policy.set_training_mode(False)
    with torch.no_grad():
        after = extractor(obs)
        embeddings = next(extractor.encoder.parameters())
        embeddings.add_(0.1 * torch.randn_like(embeddings))  # an in-place step bumps versions
        stepped = extractor(obs)
    assert not torch.allclose(after, before) and not torch.allclose(stepped, after)
    fresh = dict(dedup=False, cache=False)
    extractor.cache, extractor.dedup = fresh["cache"], fresh["dedup"]
    with torch.no_grad():
        torch.testing.assert_close(extractor(obs), stepped)


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_evaluation_encodes_each_sentence_once(algo, one_torch_thread):
    # lmgym.evaluate acts through SB3's predict, which sets eval mode on every call: the
    # cache must survive that (it used to be emptied, re-encoding a sentence per word)
    import lmgym

    _, _, model = _train(algo, "lmgym/NER-v0", exact=True, steps=32)
    extractor = model.policy.features_extractor
    rows = extractor.encoder_rows
    cached = lmgym.evaluate(model, "lmgym/NER-v0", split="validation", **SAMPLE)
    encoded = extractor.encoder_rows - rows
    extractor.cache = False
    plain = lmgym.evaluate(model, "lmgym/NER-v0", split="validation", **SAMPLE)
    words = extractor.encoder_rows - rows - encoded
    assert cached == plain
    assert encoded <= cached["sentences"] < words, (encoded, cached["sentences"], words)


def test_dedup_gives_the_gradients_of_separate_rows(one_torch_thread):
    _, _, model = _train("ppo", "lmgym/NER-v0", exact=True, steps=32)
    policy, extractor = model.policy, model.policy.features_extractor
    obs = {k: torch.as_tensor(v).float().repeat(3, 1) for k, v in model.env.reset().items()}
    actions = torch.zeros(len(obs["input_ids"]), dtype=torch.long)
    policy.set_training_mode(True)

    def loss_and_grads(dedup: bool):
        extractor.dedup = dedup
        policy.zero_grad()
        values, log_prob, entropy = policy.evaluate_actions(obs, actions)
        (values.sum() + log_prob.sum() + entropy.sum()).backward()
        grads = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
        return torch.cat([values.flatten(), log_prob, entropy]).detach(), grads

    rows = extractor.encoder_rows
    out_fast, grads_fast = loss_and_grads(True)
    assert extractor.encoder_rows - rows == len(actions) // 3
    out_slow, grads_slow = loss_and_grads(False)
    torch.testing.assert_close(out_fast, out_slow, rtol=1e-5, atol=1e-6)
    for fast, slow in zip(grads_fast, grads_slow, strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


def test_episode_order_keeps_episodes_together():
    n_steps, n_envs = 12, 3
    starts = np.zeros((n_steps, n_envs))
    starts[[0, 4, 9], 0] = 1
    starts[[0, 6], 1] = 1
    starts[[3], 2] = 1
    rng = np.random.default_rng(0)
    order = episode_order(starts, rng)
    assert sorted(order) == list(range(n_steps * n_envs))
    where = np.argsort(order)  # position of each flat index in the permutation
    episodes = {0: [0, 4, 9, 12], 1: [0, 6, 12], 2: [0, 3, 12]}
    for env, cuts in episodes.items():
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=False):
            positions = where[env * n_steps + np.arange(lo, hi)]
            # one episode: its steps stand together, in time order
            assert np.array_equal(positions, np.arange(positions[0], positions[0] + hi - lo))
    assert len({tuple(episode_order(starts, rng)) for _ in range(5)}) > 1  # shuffled


def test_episode_grouped_buffer_trains_and_groups_minibatches(one_torch_thread):
    seen = []

    class Recording(EpisodeGroupedDictRolloutBuffer):
        def _get_samples(self, batch_inds, env=None):
            seen.append(np.asarray(batch_inds))
            return super()._get_samples(batch_inds, env)

    _, _, model = _train(
        "ppo", "lmgym/NER-v0", exact=True, steps=64, rollout_buffer_class=Recording
    )
    n = model.n_steps * model.n_envs
    per_epoch = n // model.batch_size
    for epoch in range(model.n_epochs):
        batch = np.concatenate(seen[epoch * per_epoch : (epoch + 1) * per_epoch])
        assert sorted(batch) == list(range(n))  # every step once per epoch
    # grouped: a minibatch holds far fewer distinct sentences than a random one would
    ids = model.rollout_buffer.observations["input_ids"]
    distinct = np.mean([len({ids[i].tobytes() for i in b}) for b in seen])
    assert distinct <= 6, distinct


def test_rollout_buffer_class_names():
    assert rollout_buffer_class("random", "ppo") is None
    assert rollout_buffer_class("episodes", "ppo") is EpisodeGroupedDictRolloutBuffer
    assert "Maskable" in rollout_buffer_class("episodes", "maskable_ppo").__name__
    with pytest.raises(ValueError, match="choose one of"):
        rollout_buffer_class("sorted", "ppo")
    with pytest.raises(ValueError, match="replay buffer"):
        rollout_buffer_class("episodes", "dqn")

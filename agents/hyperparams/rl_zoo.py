"""The ``agents/hyperparams/<algo>.yml`` entries in the form rl-zoo3 reads.

rl-zoo3 takes ``hyperparams[env_id]`` as is (no ``default`` merge) and passes every key it
does not know to the algorithm, so the agents' setup keys are translated: ``default`` is
merged in exactly as ``agents.train`` merges it, ``total_timesteps`` becomes ``n_timesteps``, ``backbone`` goes into the
``policy_kwargs`` of ``agents.policies.TransformerPolicy`` (``MaskableTransformerPolicy``
for MaskablePPO) and keys only ``agents.train`` understands are dropped. Use the
per-algorithm modules beside this one::

    python -m rl_zoo3.train --algo ppo --env lmgym/SST2-v0 --gym-packages lmgym \\
        -conf agents.hyperparams.zoo_ppo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
#: the keys rl-zoo3 reads itself (``total_timesteps`` becomes its ``n_timesteps``)
ZOO_KEYS = ("n_envs", "total_timesteps", "policy", "policy_kwargs", "env_kwargs")


def _agents_only() -> tuple[str, ...]:
    """The setup keys only ``agents.train`` reads (warm start, KL control, self-imitation...):
    rl-zoo3 would pass them to the algorithm's constructor, which refuses them."""
    from agents.train import SETUP_KEYS

    return tuple(key for key in SETUP_KEYS if key not in ZOO_KEYS and key != "backbone")


def zoo_entry(algo: str, env_id: str, **overrides: Any) -> dict[str, Any]:
    """rl-zoo3's entry for ``env_id`` built from ``<algo>.yml`` (``overrides`` win).

    The YAML is merged by :func:`agents.train.load_hyperparams`, the same function
    ``agents.train`` uses (``default``, the env's entry, ``backbone_overrides``), so
    both read the same numbers; ``overrides`` then replace keys as ``--hp`` does.

    :param algo: algorithm name (file ``<algo>.yml``).
    :param env_id: the entry to build.
    :param overrides: keys to set after merging (``backbone`` picks the override block).
    """
    from agents.train import load_hyperparams

    entry = load_hyperparams(algo, env_id, backbone=overrides.get("backbone"))
    entry.update(overrides)
    backbone = entry.pop("backbone")
    for key in _agents_only():
        entry.pop(key, None)
    entry["n_timesteps"] = entry.pop("total_timesteps")
    policy = "MaskableTransformerPolicy" if algo == "maskable_ppo" else "TransformerPolicy"
    entry.setdefault("policy", f"agents.policies.{policy}")
    entry["policy_kwargs"] = f"dict(backbone={backbone!r}, **{entry.pop('policy_kwargs', {})!r})"
    return entry


def zoo_hyperparams(algo: str) -> dict[str, dict[str, Any]]:
    """Every env entry of ``<algo>.yml`` in rl-zoo3 form (patterns such as ``lmgym/*`` are
    merged into the entries they match, not listed)."""
    entries = yaml.safe_load((HERE / f"{algo}.yml").read_text())
    return {
        env_id: zoo_entry(algo, env_id)
        for env_id in entries
        if env_id != "default" and "*" not in env_id
    }

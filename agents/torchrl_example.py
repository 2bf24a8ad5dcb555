"""lmgym in TorchRL: ``GymEnv`` + an action-mask transform, then a random-policy rollout.

Run: ``python -m agents.torchrl_example --env-id lmgym/NER-v0 --data-dir sample --steps 50``.

TorchRL's ``GymEnv`` converts the ``Dict`` of integer ``Box``es key by key into a
``Composite`` of ``BoundedDiscrete`` specs (int32/int8 tensors, same names and shapes as
the Gymnasium observation), and ``Discrete(n)`` into a ``OneHot(n)`` action spec. The env's
``action_mask`` is int8 (SB3 wants integer Boxes); TorchRL's :class:`ActionMask` transform
wants a bool mask, so the env below casts that one key to bool first. With the mask in
place ``env.rand_action`` (what ``rollout`` uses without a policy) and any
``MaskedCategorical`` policy only pick valid actions.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


def make_env(env_id: str = "lmgym/NER-v0", mask: bool = True, **make_kwargs: Any):
    """A TorchRL env over an lmgym id; with ``mask`` the action spec follows ``action_mask``.

    :param env_id: a registered lmgym id.
    :param mask: add ``DTypeCastTransform(int8 -> bool)`` and ``ActionMask`` on ``action_mask``.
    :param make_kwargs: passed to ``gym.make`` (``data_dir=``, ``split=``, ...).
    """
    from torchrl.envs import ActionMask, DTypeCastTransform, GymEnv, TransformedEnv

    import lmgym  # noqa: F401  (registers the ids)

    env = GymEnv(env_id, **make_kwargs)
    if not mask:
        return env
    cast = DTypeCastTransform(torch.int8, torch.bool, in_keys=["action_mask"], in_keys_inv=[])
    return TransformedEnv(env, cast).append_transform(ActionMask())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="lmgym/NER-v0")
    parser.add_argument(
        "--data-dir", default="sample", help="data folder passed to gym.make (or 'sample')"
    )
    parser.add_argument("--steps", type=int, default=50, help="random-policy steps to roll out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    env = make_env(args.env_id, data_dir=args.data_dir)
    env.set_seed(args.seed)
    # break_when_any_done=False: TorchRL resets finished episodes itself and keeps going.
    rollout = env.rollout(args.steps, break_when_any_done=False)
    actions = rollout["action"].argmax(-1)
    masks = rollout["action_mask"]
    valid = masks.gather(-1, actions.unsqueeze(-1)).all().item()
    summary = {
        "steps": float(rollout.batch_size[0]),
        "episodes": float(rollout["next", "done"].sum().item()),
        "mean_reward": float(rollout["next", "reward"].mean().item()),
        "all_actions_valid": float(valid),
    }
    print(summary)
    return summary


if __name__ == "__main__":
    main()

"""The RL side of lmgym: transformer policies for Stable-Baselines3 and friends.

>>> import gymnasium as gym, lmgym
>>> from stable_baselines3 import PPO
>>> from agents import TransformerPolicy, pretrain
>>> env = gym.make("lmgym/NER-v0", tokenizer="minilm")  # doctest: +SKIP
>>> model = PPO(TransformerPolicy, env, policy_kwargs=dict(backbone="minilm"))  # doctest: +SKIP
>>> pretrain(model, "lmgym/NER-v0", steps=200, tokenizer="minilm")  # doctest: +SKIP
>>> model.learn(20_000)  # doctest: +SKIP

Importing ``agents`` imports torch, transformers and SB3 but loads no weights.
"""

from agents.anchor import SupervisedAnchorCallback
from agents.backbones import make_backbone
from agents.dqn import DQN
from agents.evaluate import load_model, save_model
from agents.extractor import FeatureLayout, TransformerExtractor
from agents.heads import TaskHeads, infer_family
from agents.kl import AdaptiveKLController, KLPenaltyCallback
from agents.policies import (
    MaskableTransformerPolicy,
    TransformerPolicy,
    TransformerQNetwork,
    TransformerQPolicy,
    env_policy_kwargs,
)
from agents.pretrain import demonstrations, pretrain
from agents.reinforce import REINFORCE
from agents.self_imitation import SelfImitationCallback
from agents.trpo import TRPO

__all__ = [
    "DQN",
    "REINFORCE",
    "TRPO",
    "AdaptiveKLController",
    "FeatureLayout",
    "KLPenaltyCallback",
    "MaskableTransformerPolicy",
    "SelfImitationCallback",
    "SupervisedAnchorCallback",
    "TaskHeads",
    "TransformerExtractor",
    "TransformerPolicy",
    "TransformerQNetwork",
    "TransformerQPolicy",
    "demonstrations",
    "env_policy_kwargs",
    "infer_family",
    "load_model",
    "make_backbone",
    "pretrain",
    "save_model",
]

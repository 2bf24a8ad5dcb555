"""rl-zoo3 hyperparameters for ppo: ``-conf agents.hyperparams.zoo_ppo``."""

from agents.hyperparams.rl_zoo import zoo_hyperparams

hyperparams = zoo_hyperparams("ppo")

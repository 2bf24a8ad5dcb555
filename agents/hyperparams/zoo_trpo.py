"""rl-zoo3 hyperparameters for trpo: ``-conf agents.hyperparams.zoo_trpo``."""

from agents.hyperparams.rl_zoo import zoo_hyperparams

hyperparams = zoo_hyperparams("trpo")

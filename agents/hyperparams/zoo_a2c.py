"""rl-zoo3 hyperparameters for a2c: ``-conf agents.hyperparams.zoo_a2c``."""

from agents.hyperparams.rl_zoo import zoo_hyperparams

hyperparams = zoo_hyperparams("a2c")

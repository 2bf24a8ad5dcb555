"""rl-zoo style hyperparameters (``<algo>.yml``, keyed by env id) and their rl-zoo3 form."""

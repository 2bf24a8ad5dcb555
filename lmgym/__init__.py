"""lmgym: Gymnasium environments for training language-model policies with RL on real NLP tasks.

``import lmgym`` registers every env (``lmgym/NER-v0``, ``lmgym/SST2-v0``, ...); it imports
neither torch nor any dataset until an env is made.
"""

from lmgym.envs import register_envs

__version__ = "0.1.0"

register_envs()


def evaluate(*args, **kwargs):
    """Run a policy over a whole split; see :func:`lmgym.evaluation.evaluate`."""
    from lmgym.evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["__version__", "evaluate", "register_envs"]

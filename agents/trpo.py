"""TRPO whose actor gradients come from one backward pass instead of one per parameter.

sb3-contrib's ``TRPO._compute_actor_grad`` calls ``torch.autograd.grad(kl, param,
create_graph=True)`` once per parameter tensor. Each call builds and keeps its own
double-backward graph through everything between the KL and that parameter, so memory
grows with (number of parameter tensors) x (activations): trivial for an MLP, but a
transformer has dozens of tensors (MiniLM: ~100), and on SST-2 with the tiny 2-layer
encoder one update of a 1,024-step rollout peaked at 21.5 GB RSS and was OOM-killed.
:class:`TRPO` computes the same gradients with one ``autograd.grad`` call over all actor
parameters (one graph), and is otherwise sb3-contrib's ``TRPO`` unchanged: the same
parameters (names without ``value``), the same flattening order, the same conjugate
gradient and line search.
"""

from __future__ import annotations

import torch as th
from sb3_contrib import TRPO as _ContribTRPO
from torch import nn


class TRPO(_ContribTRPO):
    """sb3-contrib ``TRPO`` with a single-graph :meth:`_compute_actor_grad`."""

    def _compute_actor_grad(
        self, kl_div: th.Tensor, policy_objective: th.Tensor
    ) -> tuple[list[nn.Parameter], th.Tensor, th.Tensor, list[tuple[int, ...]]]:
        """Actor parameters, flat surrogate-objective gradient, flat KL gradient (with its
        graph, for the Hessian-vector products) and the parameters' shapes."""
        candidates = [p for name, p in self.policy.named_parameters() if "value" not in name]
        kl_grads = th.autograd.grad(
            kl_div, candidates, create_graph=True, retain_graph=True, allow_unused=True
        )
        used = [(p, g) for p, g in zip(candidates, kl_grads, strict=True) if g is not None]
        actor_params = [p for p, _ in used]
        objective_grads = th.autograd.grad(policy_objective, actor_params, retain_graph=True)
        grad_shape = [tuple(g.shape) for _, g in used]
        grad_kl = th.cat([g.reshape(-1) for _, g in used])
        policy_objective_gradients = th.cat([g.reshape(-1) for g in objective_grads])
        return actor_params, policy_objective_gradients, grad_kl, grad_shape

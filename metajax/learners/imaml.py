"""Implicit MAML (Rajeswaran et al. 2019): MAML whose inner problem is a proximal one and whose
meta-gradient comes from the implicit function theorem instead of backpropagation through the
inner loop.

Inner problem, from the meta-parameters `theta`:
    phi*(theta) = argmin_phi  L_support(phi) + lam/2 ||phi - theta||^2,
solved approximately by `steps` gradient steps from `theta` (a `lax.scan` that is never
differentiated). At the solution `grad L_support(phi*) + lam (phi* - theta) = 0`, so
    d phi*/d theta = (I + H/lam)^-1,   H = the support loss's Hessian at phi*,
and the meta-gradient `(I + H/lam)^-1 grad L_query(phi*)` is `cg_steps` conjugate-gradient
iterations on Hessian-vector products (`metajax.learners.implicit`). Memory does not depend on
`steps`; second-order MAML's grows with it (or its compute does, with remat).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import optax

from metajax.learners.implicit import implicit_argmin
from metajax.learners.maml import LossName, _network, _supervised_learner, objective, sgd_step
from metajax.nets.network import merge_variables, same_dtypes, split_variables
from metajax.types import Learner, PRNGKey, Task, Variables

# the authors' code solves its meta-gradient's system with lambda + 10 (`lam_damping`)
AUTHORS_SYSTEM_OFFSET = 10.0


def imaml(network: nn.Module, inner_lr: float = 0.1, steps: int = 10, *, lam: float = 2.0,
          cg_steps: int = 5, cg_damping: float = 0.0, pull_back: bool = False,
          system_lam: float | None = None, loss: LossName = "xent",
          running_average: bool = False) -> Learner:
    """iMAML with gradient descent as the inner solver (the paper's iMAML-GD).

    Args:
      network: any Flax module `[B, ...] -> [B, outputs]`, as for `maml`.
      inner_lr: step size of the inner gradient descent on the proximal objective.
      steps: inner gradient steps (the solution's accuracy; memory does not grow with it).
      lam: the proximal regulariser lambda: larger keeps `phi` closer to `theta` and makes the
        linear system better conditioned.
      cg_steps: conjugate-gradient iterations of the meta-gradient's linear solve.
      cg_damping: solve `((1 + cg_damping) I + H/lam) w = g` instead of the exact system (the
        authors' damping; it makes the system better conditioned and the gradient more
        first-order).
      pull_back: adapt as the authors' code does instead of solving the proximal problem: the
        `steps` gradient steps descend the support loss alone, then one step of size `inner_lr`
        on the proximal term pulls `phi` back towards `theta`
        (`phi - inner_lr * lam * (phi - theta)`). `phi` is then not the proximal solution, so
        the implicit meta-gradient is an approximation (near first order with their damping).
      system_lam: the lambda of the meta-gradient's linear system, `((1 + cg_damping) I +
        H/system_lam)` (default `lam`; the authors' code uses `lam + AUTHORS_SYSTEM_OFFSET`).
      loss: `"xent"` or `"mse"`.
      running_average: score the query set with `train=False`, as in `maml`.

    Returns:
      A `Learner` like `maml`'s: `adapt` gives the variables at the inner solution, and the
      gradient of `loss` with respect to the variables' `params` is the implicit meta-gradient.
      The inner problem uses one dropout key for all its steps, so that it is one deterministic
      objective whose solution the implicit gradient describes.
    """
    if lam <= 0:
        raise ValueError(f"imaml's lam must be positive, got {lam}")
    system_lam = lam if system_lam is None else system_lam
    if system_lam <= 0:
        raise ValueError(f"imaml's system_lam must be positive, got {system_lam}")
    net = _network(network)
    task_loss = objective(loss)

    def init(key: PRNGKey, task: Task) -> Variables:
        return net.init(key, task.support_x)

    def support_loss(phi, state, key, x, y):
        out, state = net.apply(merge_variables(phi, state), x, key=key, train=True)
        return task_loss(out, y)[0], state

    def proximal_and_state(phi, theta, state, key, x, y, weight=lam):
        value, state = support_loss(phi, state, key, x, y)
        return value + 0.5 * weight * optax.tree.norm(optax.tree.sub(phi, theta),
                                                       squared=True), state

    def system(phi, theta, state, key, x, y):
        # the objective whose Hessian (H + system_lam I) the backward pass solves with
        return proximal_and_state(phi, theta, state, key, x, y, system_lam)[0]

    def solve(theta, state, key, x, y):
        def inner_objective(p, s):  # with pull_back the steps descend the support loss alone
            if pull_back:
                return support_loss(p, s, key, x, y)
            return proximal_and_state(p, theta, s, key, x, y)

        def step(carry, _):
            phi, s = carry
            (_, new_s), grads = jax.value_and_grad(inner_objective, has_aux=True)(phi, s)
            return (sgd_step(phi, grads, inner_lr), same_dtypes(new_s, s)), None

        (phi, state), _ = jax.lax.scan(step, (theta, state), None, length=steps)
        if pull_back:
            phi = jax.tree.map(lambda p, t: p - inner_lr * lam * (p - t), phi, theta)
        return phi, state

    minimize = implicit_argmin(system, solve, has_aux=True, maxiter=cg_steps,
                               ridge=cg_damping * system_lam)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None) -> Variables:
        params, state = split_variables(variables)
        phi, state = minimize(params, state, key, task.support_x, task.support_y)
        return merge_variables(phi, state)

    return _supervised_learner(net, task_loss, init, adapt, running_average)

"""Implicit differentiation of a solver's output: gradients through an inner optimisation
without storing (or differentiating) its iterations.

If `x*(theta)` solves `F(x, theta) = 0` (for a minimiser, `F = grad_x f`), the implicit function
theorem gives `dx*/dtheta = -(dF/dx)^-1 dF/dtheta`. So the vector-Jacobian product of a solver's
output needs one linear solve with `(dF/dx)^T` (conjugate gradient when `F` is a gradient, whose
Jacobian is a symmetric Hessian; GMRES otherwise), each iteration one Hessian-vector product, and
one vector-Jacobian product of `F` with respect to `theta`. Memory is that of one evaluation of
`F`'s derivatives, whatever the number of solver iterations.

`implicit_root(optimality, solve)` wraps any `solve(*args) -> x` in a `jax.custom_vjp` with that
rule. The API is jaxopt's `custom_root` and TorchOpt's `diff.implicit.custom_root` without the
decorator: the optimality function and the solver are both plain functions of the same arguments,
so nothing is tied to a solver class, every argument is differentiable (integer arguments get
zero cotangents), and `implicit_argmin(objective, solve)` covers the common case of a minimiser.
`implicit_vjp` is the backward rule on its own, with the linear solve's residual, for checking it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.scipy.sparse.linalg import cg, gmres

Pytree = Any


def implicit_vjp(optimality: Callable[..., Pytree], x_star: Pytree, args: tuple, cotangent: Pytree,
                 *, symmetric: bool = True, maxiter: int = 20, tol: float = 1e-10,
                 ridge: float = 0.0) -> tuple[tuple, dict[str, jax.Array]]:
    """Cotangents of `args` for the cotangent of the root `x_star` of `optimality(x, *args) = 0`.

    Solves `(dF/dx + ridge I)^T w = cotangent` (CG if `symmetric`, else GMRES) and returns
    `(-(dF/dargs)^T w, info)`, `info = {"residual": ||A^T w - cotangent||, "rhs": ||cotangent||}`.
    `ridge` damps an ill-conditioned Jacobian (it biases the gradient towards the first-order one).
    """
    _, vjp_x = jax.vjp(lambda x: optimality(x, *args), x_star)

    def matvec(w):
        (out,) = vjp_x(w)
        return jax.tree.map(lambda a, b: a + ridge * b, out, w) if ridge else out

    solver = cg if symmetric else gmres
    w, _ = solver(matvec, cotangent, maxiter=maxiter, tol=tol)
    residual = jax.tree.map(jnp.subtract, matvec(w), cotangent)
    _, vjp_args = jax.vjp(lambda *a: optimality(x_star, *a), *args)
    grads = vjp_args(jax.tree.map(jnp.negative, w))
    return grads, {"residual": optax.tree.norm(residual), "rhs": optax.tree.norm(cotangent)}


def implicit_root(optimality: Callable[..., Pytree], solve: Callable[..., Pytree], *,
                  has_aux: bool = False, symmetric: bool = True, maxiter: int = 20,
                  tol: float = 1e-10, ridge: float = 0.0) -> Callable[..., Pytree]:
    """`solve`, differentiated as the root of `optimality(x, *args) = 0` instead of through its
    iterations.

    Args:
      optimality: `optimality(x, *args) -> pytree like x`, zero at the solution.
      solve: `solve(*args) -> x` (or `(x, aux)` with `has_aux`; `aux` gets no gradient), for
        example a `lax.scan` of gradient steps. It is never differentiated.
      symmetric: `dF/dx` is symmetric (F is a gradient): conjugate gradient; else GMRES.
      maxiter, tol, ridge: of the linear solve (see `implicit_vjp`).

    Returns:
      `root(*args)`, equal to `solve(*args)`, whose vector-Jacobian product is the implicit one.
    """

    def run(*args):
        out = solve(*args)
        return out if has_aux else (out, None)

    @jax.custom_vjp
    def root(*args):
        return run(*args)

    def forward(*args):
        out = run(*args)
        return out, (out[0], args)

    def backward(res, cotangents):
        x_star, args = res
        grads, _ = implicit_vjp(optimality, x_star, args, cotangents[0], symmetric=symmetric,
                                maxiter=maxiter, tol=tol, ridge=ridge)
        return grads

    root.defvjp(forward, backward)

    def call(*args):
        x, aux = root(*args)
        return (x, jax.lax.stop_gradient(aux)) if has_aux else x

    return call


def implicit_argmin(objective: Callable[..., jax.Array], solve: Callable[..., Pytree], *,
                    has_aux: bool = False, maxiter: int = 20, tol: float = 1e-10,
                    ridge: float = 0.0) -> Callable[..., Pytree]:
    """`implicit_root` for a minimiser of `objective(x, *args)`: the optimality condition is its
    gradient in `x`, whose Jacobian (the Hessian) is symmetric, so the backward pass is conjugate
    gradient on Hessian-vector products (the Hessian must be positive definite at the solution,
    as it is for iMAML's proximal objective with a large enough regulariser)."""
    return implicit_root(jax.grad(objective), solve, has_aux=has_aux, symmetric=True,
                         maxiter=maxiter, tol=tol, ridge=ridge)

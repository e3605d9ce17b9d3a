"""Meta-learning with differentiable closed-form heads: R2D2 (Bertinetto et al. 2019, "Meta-learning
with differentiable closed-form solvers") and MetaOptNet (Lee et al. 2019, "Meta-Learning with
Differentiable Convex Optimization").

An embedding network maps support and query images to features; in every task a linear classifier
is fitted to the support features by a convex problem solved exactly (ridge regression) or to
convergence (a multiclass SVM), and the query logits are that classifier's scores. The embedding is
meta-learned through the solution: ridge regression by differentiating its closed form, the SVM by
implicit differentiation of its dual's optimality condition (`metajax.learners.implicit`), so
neither backpropagates through solver iterations.

Ridge regression is solved in its dual (Woodbury) form, `W = Z^T (Z Z^T + lam I)^-1 Y`: an n x n
system for n support examples, small in few-shot episodes whatever the feature dimension.
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from optax.projections import projection_simplex

from metajax.learners.classification import cross_entropy
from metajax.learners.implicit import implicit_root
from metajax.learners.protonet import as_network
from metajax.nets.network import merge_variables, split_variables
from metajax.types import Array, Learner, PRNGKey, Task, Variables, without_state


def ridge_head(features: Array, labels: Array, num_classes: int, lam: Array | float) -> Array:
    """Ridge-regression weights `[D, N]` from support `features [n, D]` to one-hot `labels`, in
    the dual form `Z^T (Z Z^T + lam I)^-1 Y` (an n x n solve)."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    gram = features @ features.T
    eye = jnp.eye(gram.shape[0], dtype=features.dtype)
    return features.T @ jnp.linalg.solve(gram + lam * eye, targets)


def _svm_project(alpha: Array, targets: Array, c: float) -> Array:
    """Projection onto the Crammer-Singer dual's feasible set, one row per support example:
    `alpha_n <= C y_n` and `sum_k alpha_nk = 0`, i.e. `C y_n - alpha_n` on the simplex of sum C."""
    return c * targets - jax.vmap(lambda row: projection_simplex(row, c))(c * targets - alpha)


def _svm_gradient(alpha: Array, gram: Array, targets: Array) -> Array:
    return gram @ alpha - targets


def svm_dual(gram: Array, labels: Array, num_classes: int, c: float = 0.1,
             iterations: int = 100) -> Array:
    """The Crammer-Singer multiclass SVM's dual solution `alpha [n, N]` for the support Gram matrix
    `gram [n, n]`, by accelerated projected gradient (FISTA); differentiable in `gram` by implicit
    differentiation of the projected-gradient fixed point. The weights are `Z^T alpha`.

    Dual: min_alpha 1/2 sum_k alpha_k^T K alpha_k - sum_n alpha_n,y_n subject to
    alpha_n <= C onehot(y_n), sum_k alpha_nk = 0 (Lee et al. 2019, eq. 8, as a minimisation)."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=gram.dtype)
    # 1 / the gradient's Lipschitz constant (the largest eigenvalue; the Frobenius norm bounds it)
    step = jax.lax.stop_gradient(1.0 / (jnp.linalg.norm(gram) + 1e-6))

    # Everything the solver depends on is an argument: a custom_vjp must not close over values
    # of an enclosing transformation (the trainer's vmap over tasks).
    def mapping(alpha, k, y, eta):
        return _svm_project(alpha - eta * _svm_gradient(alpha, k, y), y, c)

    def optimality(alpha, k, y, eta):
        return alpha - mapping(alpha, k, y, eta)

    def solve(k, y, eta):
        def body(i, carry):
            alpha, _, momentum_point = carry
            new = mapping(momentum_point, k, y, eta)
            momentum = i / (i + 3.0)
            return new, alpha, new + momentum * (new - alpha)

        start = jnp.zeros_like(y)
        return jax.lax.fori_loop(0, iterations, body, (start, start, start))[0]

    return implicit_root(optimality, solve, symmetric=False, maxiter=5)(gram, targets, step)


def _head_params(kind: str, lam: float, scale: float) -> dict[str, Array]:
    params = {"scale": jnp.asarray(scale, jnp.float32)}
    if kind == "r2d2":
        params["log_lambda"] = jnp.log(jnp.asarray(lam, jnp.float32))
        params["bias"] = jnp.zeros((), jnp.float32)
    return params


def _closed_form_learner(embedding: nn.Module, kind: str, *, head: str, lam: float, c: float,
                         iterations: int, scale: float, running_average: bool) -> Learner:
    net = as_network(embedding)

    def init(key: PRNGKey, task: Task) -> Variables:
        params, state = split_variables(net.init(key, task.support_x))
        return merge_variables({"embedding": params, "head": _head_params(kind, lam, scale)},
                               state)

    def adapt_with_state(variables: Variables, task: Task, key: PRNGKey | None):
        if task.num_classes < 2:
            raise ValueError(f"{kind} classifies N-way episodes; got num_classes="
                             f"{task.num_classes} (a regression task?)")
        params, state = split_variables(variables)
        n_support = task.support_x.shape[0]
        z, state = net.apply(merge_variables(params["embedding"], state),
                             jnp.concatenate([task.support_x, task.query_x]), key=key,
                             train=not running_average)
        support, query = z[:n_support], z[n_support:]
        h = params["head"]
        if head == "ridge":
            ridge = jnp.exp(h["log_lambda"]) if "log_lambda" in h else lam
            weights = ridge_head(support, task.support_y, task.num_classes, ridge)
        else:
            alpha = svm_dual(support @ support.T, task.support_y, task.num_classes, c, iterations)
            weights = support.T @ alpha
        return {"weights": weights, "query": query, "head": h}, state

    def logits(fitted) -> Array:
        out = fitted["head"]["scale"] * (fitted["query"] @ fitted["weights"])
        return out + fitted["head"]["bias"] if "bias" in fitted["head"] else out

    def predict(variables: Variables, task: Task, key: PRNGKey | None = None) -> Array:
        return logits(adapt_with_state(variables, task, key)[0])

    def loss_and_state(variables: Variables, task: Task, key: PRNGKey | None = None):
        fitted, state = adapt_with_state(variables, task, key)
        value, metrics = cross_entropy(logits(fitted), task.query_y)
        return value, (metrics, state)

    def adapt(variables: Variables, task: Task, key: PRNGKey | None = None) -> dict:
        fitted = adapt_with_state(variables, task, key)[0]
        return {"weights": fitted["weights"], "query": fitted["query"]}

    return Learner(init=init, loss=without_state(loss_and_state), predict=predict, adapt=adapt,
                   loss_and_state=loss_and_state)


def r2d2(embedding: nn.Module, *, lam: float = 50.0, scale: float = 10.0,
         running_average: bool = False) -> Learner:
    """R2D2: a ridge-regression head on a meta-learned embedding, logits
    `scale * Z_q W + bias` with the regulariser (as `log_lambda`), `scale` and `bias` meta-learned.

    Args:
      embedding: Flax module `[B, ...] -> [B, D]` (for example `Conv4()`); support and query are
        embedded in one batch (transductive batch norm) unless `running_average`.
      lam: the ridge regulariser's starting value.
      scale: the logits' starting scale (ridge scores of one-hot targets lie around [0, 1]).

    Returns:
      A `Learner` for episodes of any number of ways; `adapt` gives `{"weights": [D, N],
      "query": [Q, D]}`. Variables: `{"params": {"embedding": ..., "head": {"log_lambda",
      "scale", "bias"}}, <state collections>}`.
    """
    return _closed_form_learner(embedding, "r2d2", head="ridge", lam=lam, c=0.0, iterations=0,
                                scale=scale, running_average=running_average)


def metaoptnet(embedding: nn.Module, head: Literal["svm", "ridge"] = "svm", *, c: float = 0.1,
               lam: float = 50.0, iterations: int = 100, scale: float = 10.0,
               running_average: bool = False) -> Learner:
    """MetaOptNet: a multiclass SVM (Crammer-Singer, `head="svm"`) or ridge-regression head
    (fixed regulariser `lam`) on a meta-learned embedding, logits `scale * Z_q W` with `scale`
    meta-learned.

    Args:
      embedding: Flax module `[B, ...] -> [B, D]`.
      head: `"svm"` or `"ridge"`.
      c: the SVM's box constraint (the paper's C).
      lam: the ridge regulariser.
      iterations: FISTA iterations of the SVM dual (its gradient is implicit, so they cost no
        memory in the backward pass).
      scale: the logits' starting scale.

    Returns:
      A `Learner` like `r2d2`'s; variables' head holds `scale` only.
    """
    if head not in ("svm", "ridge"):
        raise ValueError(f"metaoptnet's head must be 'svm' or 'ridge', got {head!r}")
    if c <= 0:
        raise ValueError(f"metaoptnet's c must be positive, got {c}")
    return _closed_form_learner(embedding, "metaoptnet", head=head, lam=lam, c=c,
                                iterations=iterations, scale=scale,
                                running_average=running_average)

"""Implicit differentiation (`metajax.learners.implicit`) against closed forms in float64, and
iMAML's meta-gradient against its defining formula."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.learners.implicit import implicit_argmin, implicit_root, implicit_vjp


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


N, D, LAM = 12, 5, 0.7


def _ridge_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(N, D)))
    y = jnp.asarray(rng.normal(size=(N,)))
    xq = jnp.asarray(rng.normal(size=(7, D)))
    yq = jnp.asarray(rng.normal(size=(7,)))
    theta = jnp.asarray(rng.normal(size=(D,)))
    return x, y, xq, yq, theta


def _inner_objective(phi, theta, x, y):
    return 0.5 * jnp.mean((x @ phi - y) ** 2) + 0.5 * LAM * jnp.sum((phi - theta) ** 2)


def _closed_form(theta, x, y):
    a = x.T @ x / N + LAM * jnp.eye(D)
    return jnp.linalg.solve(a, x.T @ y / N + LAM * theta)


def _gradient_descent(theta, x, y, steps=2000, lr=0.3):
    def step(phi, _):
        return phi - lr * jax.grad(_inner_objective)(phi, theta, x, y), None

    return jax.lax.scan(step, theta, None, length=steps)[0]


def _outer(solution):
    def loss(theta, x, y, xq, yq):
        return 0.5 * jnp.sum((xq @ solution(theta, x, y) - yq) ** 2)

    return loss


def test_implicit_meta_gradient_equals_the_closed_form_ridge_one():
    x, y, xq, yq, theta = _ridge_problem()
    minimize = implicit_argmin(_inner_objective, _gradient_descent, maxiter=50)
    np.testing.assert_allclose(minimize(theta, x, y), _closed_form(theta, x, y), atol=1e-10)
    implicit = jax.grad(_outer(minimize), argnums=(0, 1, 2))(theta, x, y, xq, yq)
    exact = jax.grad(_outer(_closed_form), argnums=(0, 1, 2))(theta, x, y, xq, yq)
    for got, want in zip(implicit, exact, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    # The closed form of the theta gradient, written out: lam (X'X/n + lam I)^-1 grad L_q(phi*).
    phi = _closed_form(theta, x, y)
    formula = LAM * jnp.linalg.solve(x.T @ x / N + LAM * jnp.eye(D), xq.T @ (xq @ phi - yq))
    np.testing.assert_allclose(implicit[0], formula, atol=1e-6, rtol=1e-6)
    # A gradient through the solver's iterations is not what the implicit rule computes for a
    # solver that has not converged: the rule uses the solution only.
    short = implicit_argmin(_inner_objective, lambda t, a, b: _gradient_descent(t, a, b, steps=3),
                            maxiter=50)
    unrolled = jax.grad(_outer(lambda t, a, b: _gradient_descent(t, a, b, steps=3)))(theta, x, y,
                                                                                     xq, yq)
    assert not np.allclose(jax.grad(_outer(short))(theta, x, y, xq, yq), unrolled, atol=1e-3)


def test_the_conjugate_gradient_residual_is_reported_and_small():
    x, y, xq, yq, theta = _ridge_problem(1)
    phi = _closed_form(theta, x, y)
    cotangent = xq.T @ (xq @ phi - yq)
    optimality = jax.grad(_inner_objective)
    (g_theta, _, _), info = implicit_vjp(optimality, phi, (theta, x, y), cotangent, maxiter=D)
    print(f"CG residual {float(info['residual']):.2e} (right-hand side {float(info['rhs']):.2e})")
    assert float(info["residual"]) < 1e-8 * float(info["rhs"])  # CG is exact in D iterations
    _, one_step = implicit_vjp(optimality, phi, (theta, x, y), cotangent, maxiter=1)
    assert float(one_step["residual"]) > 1e-4 * float(info["rhs"])  # and the residual is real
    np.testing.assert_allclose(
        g_theta, LAM * jnp.linalg.solve(x.T @ x / N + LAM * jnp.eye(D), cotangent), rtol=1e-8)


def test_a_non_symmetric_root_goes_through_gmres():
    rng = np.random.default_rng(2)
    m = jnp.asarray(rng.normal(size=(4, 4))) + 4.0 * jnp.eye(4)

    def optimality(z, b):
        return m @ z - jnp.tanh(b)

    def solve(b):  # Jacobi iterations for m z = tanh(b)
        d = jnp.diag(m)
        return jax.lax.fori_loop(0, 200, lambda _, z: (jnp.tanh(b) - (m @ z - d * z)) / d,
                                 jnp.zeros(4))

    b = jnp.asarray(rng.normal(size=(4,)))
    root = implicit_root(optimality, solve, symmetric=False, maxiter=10)
    got = jax.grad(lambda v: jnp.sum(root(v) ** 2))(b)
    want = jax.grad(lambda v: jnp.sum(jnp.linalg.solve(m, jnp.tanh(v)) ** 2))(b)
    np.testing.assert_allclose(got, want, rtol=1e-7)
    sym = implicit_root(optimality, solve, symmetric=True, maxiter=10)
    assert not np.allclose(jax.grad(lambda v: jnp.sum(sym(v) ** 2))(b), want, rtol=1e-3)


def test_imaml_meta_gradient_is_the_implicit_formula():
    """iMAML on a tiny MLP regression task, float64: the meta-gradient is
    (I + H/lam)^-1 grad L_query(phi*), with H the support loss's Hessian at phi*, computed here
    from the dense Hessian."""
    from flax.traverse_util import flatten_dict

    from metajax.learners import imaml
    from metajax.nets import MLP
    from metajax.types import Task

    rng = np.random.default_rng(3)
    task = Task(support_x=jnp.asarray(rng.normal(size=(6, 2))),
                support_y=jnp.asarray(rng.normal(size=(6, 1))),
                query_x=jnp.asarray(rng.normal(size=(8, 2))),
                query_y=jnp.asarray(rng.normal(size=(8, 1))), num_classes=0)
    lam = 3.0
    learner = imaml(MLP((4,), 1), inner_lr=0.1, steps=400, lam=lam, cg_steps=60, loss="mse")
    variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                             learner.init(jax.random.PRNGKey(0), task))
    grads = jax.grad(lambda v: learner.loss(v, task, None)[0])(variables)["params"]

    params = variables["params"]
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    net = MLP((4,), 1)

    def support(p):
        out = net.apply({"params": unravel(p)}, task.support_x)
        return jnp.mean((out - task.support_y) ** 2)

    def query(p):
        out = net.apply({"params": unravel(p)}, task.query_x)
        return jnp.mean((out - task.query_y) ** 2)

    phi = jax.flatten_util.ravel_pytree(learner.adapt(variables, task, None)["params"])[0]
    stationarity = jax.grad(support)(phi) + lam * (phi - flat)
    assert float(jnp.max(jnp.abs(stationarity))) < 1e-9
    hessian = jax.hessian(support)(phi)
    want = jnp.linalg.solve(jnp.eye(flat.size) + hessian / lam, jax.grad(query)(phi))
    got = jax.flatten_util.ravel_pytree(grads)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # and it is not the first-order gradient (the Hessian term matters on this task)
    assert not np.allclose(got, jax.grad(query)(phi), rtol=1e-2)
    assert len(flatten_dict(grads)) == len(flatten_dict(params))


def test_imaml_pull_back_adapts_and_differentiates_as_the_authors_code():
    """`pull_back=True`, float64: `phi` is `steps` plain gradient steps on the support loss, then
    `phi - lr * lam * (phi - theta)`; the meta-gradient is ((1 + d) I + H/system_lam)^-1
    grad L_query(phi), H the support loss's Hessian at that `phi`."""
    from metajax.learners import imaml
    from metajax.nets import MLP
    from metajax.types import Task

    rng = np.random.default_rng(5)
    task = Task(support_x=jnp.asarray(rng.normal(size=(6, 2))),
                support_y=jnp.asarray(rng.normal(size=(6, 1))),
                query_x=jnp.asarray(rng.normal(size=(8, 2))),
                query_y=jnp.asarray(rng.normal(size=(8, 1))), num_classes=0)
    lam, damping, lr, steps = 2.0, 1.0, 0.1, 7
    net = MLP((4,), 1)
    learner = imaml(net, inner_lr=lr, steps=steps, lam=lam, cg_steps=80, cg_damping=damping,
                    pull_back=True, system_lam=lam + 10, loss="mse")
    variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                             learner.init(jax.random.PRNGKey(0), task))
    theta, unravel = jax.flatten_util.ravel_pytree(variables["params"])

    def mse(p, x, y):
        return jnp.mean((net.apply({"params": unravel(p)}, x) - y) ** 2)

    phi = theta
    for _ in range(steps):
        phi = phi - lr * jax.grad(mse)(phi, task.support_x, task.support_y)
    phi = phi - lr * lam * (phi - theta)
    got_phi = jax.flatten_util.ravel_pytree(learner.adapt(variables, task, None)["params"])[0]
    np.testing.assert_allclose(got_phi, phi, rtol=1e-12, atol=1e-14)

    hessian = jax.hessian(mse)(phi, task.support_x, task.support_y)
    want = jnp.linalg.solve((1 + damping) * jnp.eye(theta.size) + hessian / (lam + 10),
                            jax.grad(mse)(phi, task.query_x, task.query_y))
    grads = jax.grad(lambda v: learner.loss(v, task, None)[0])(variables)["params"]
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(grads)[0], want, rtol=1e-6,
                               atol=1e-10)
    # the proximal learner with the same lambda adapts elsewhere
    proximal = imaml(net, inner_lr=lr, steps=steps, lam=lam, loss="mse")
    assert not np.allclose(
        jax.flatten_util.ravel_pytree(proximal.adapt(variables, task, None)["params"])[0], phi)


@pytest.mark.parametrize("lam", [0.0, -1.0])
def test_imaml_rejects_a_non_positive_regulariser(lam):
    from metajax.learners import imaml
    from metajax.nets import MLP

    with pytest.raises(ValueError, match="lam must be positive"):
        imaml(MLP((4,), 1), lam=lam)


def test_imaml_temporary_memory_is_flat_in_inner_steps_while_maml_grows():
    """XLA's temporary buffers of the jitted meta-gradient at 5 and 50 inner steps: iMAML's do not
    grow (nothing of the inner loop is kept for the backward pass), second-order MAML's do."""
    from metajax.learners import imaml, maml
    from metajax.nets import MLP
    from metajax.types import Task

    rng = np.random.default_rng(4)
    task = Task(support_x=jnp.asarray(rng.normal(size=(5, 32)), jnp.float32),
                support_y=jnp.arange(5), query_x=jnp.asarray(rng.normal(size=(25, 32)), jnp.float32),
                query_y=jnp.repeat(jnp.arange(5), 5), num_classes=5)

    def temp_bytes(learner):
        variables = learner.init(jax.random.PRNGKey(0), task)
        fn = jax.jit(jax.grad(lambda v: learner.loss(v, task, None)[0]))
        return fn.lower(variables).compile().memory_analysis().temp_size_in_bytes

    net = MLP((256, 256), 5)
    imaml_5, imaml_50 = (temp_bytes(imaml(net, steps=s)) for s in (5, 50))
    maml_5, maml_50 = (temp_bytes(maml(net, steps=s)) for s in (5, 50))
    print(f"temp bytes, 5 -> 50 steps: iMAML {imaml_5} -> {imaml_50}, MAML {maml_5} -> {maml_50}")
    assert imaml_50 == imaml_5
    assert maml_50 > 5 * maml_5


def test_the_registry_evaluates_imaml_on_its_training_problem_unless_told():
    """`metajax train imaml`'s test learner adapts on the proximal problem it was trained on
    (test lambda -1 = the training lambda); 0 is plain gradient descent; another negative value
    is an error."""
    from metajax.config import make_config
    from metajax.registry import build_learner
    from metajax.types import Task

    rng = np.random.default_rng(0)
    task = Task(support_x=jnp.asarray(rng.uniform(size=(3, 28, 28, 1)), jnp.float32),
                support_y=jnp.arange(3), query_x=jnp.asarray(rng.uniform(size=(3, 28, 28, 1)),
                                                             jnp.float32),
                query_y=jnp.arange(3), num_classes=3)

    def config(**overrides):
        return make_config("imaml", ways=3, shots=1, width=4, inner_steps=2, test_inner_steps=2,
                           inner_lr=0.1, proximal_lambda=2.0, **overrides)

    variables = jax.jit(build_learner(config(), phase="train").init)(jax.random.PRNGKey(0), task)

    def adapted(**overrides):
        adapt = jax.jit(build_learner(config(**overrides), phase="test").adapt)
        return np.asarray(jax.flatten_util.ravel_pytree(adapt(variables, task, None)["params"])[0])

    default, same = adapted(), adapted(test_proximal_lambda=2.0)
    plain = adapted(test_proximal_lambda=0.0)
    np.testing.assert_array_equal(default, same)
    assert np.abs(default - plain).max() > 1e-3 * np.abs(plain).max()
    with pytest.raises(ValueError, match="a lambda is >= 0"):
        make_config("imaml", test_proximal_lambda=-0.5)
    with pytest.raises(ValueError, match="--proximal-lambda 0"):
        make_config("imaml", proximal_lambda=0.0)

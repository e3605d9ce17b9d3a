"""R2D2's and MetaOptNet's heads against their definitions in float64: the dual ridge solution
equals the primal one, the SVM dual has no duality gap with the Crammer-Singer primal, and the
gradients through both heads match central differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.learners import metaoptnet, r2d2, ridge_head, svm_dual


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _episode(n_way=4, shots=2, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = jnp.asarray(np.repeat(np.arange(n_way), shots))
    centres = rng.normal(size=(n_way, dim))
    features = jnp.asarray(centres[np.asarray(labels)] + 0.8 * rng.normal(size=(len(labels), dim)))
    return features, labels


def _primal_svm(weights, features, labels, c):
    """Crammer-Singer: 1/2 ||W||^2 + C sum_n max_k (1[k != y_n] + w_k.z_n - w_y.z_n)."""
    scores = features @ weights
    margin = 1.0 - jax.nn.one_hot(labels, weights.shape[1]) + scores
    margin = margin - scores[jnp.arange(len(labels)), labels][:, None]
    return 0.5 * jnp.sum(weights**2) + c * jnp.sum(jnp.max(margin, axis=1))


def _dual_value(alpha, features, labels):
    w = features.T @ alpha
    return -0.5 * jnp.sum(w**2) + jnp.sum(alpha[jnp.arange(len(labels)), labels])


def test_ridge_head_dual_form_equals_the_primal_solution():
    z, y = _episode(dim=9)  # n = 8 support examples, D = 9 features
    lam = 0.3
    targets = jax.nn.one_hot(y, 4)
    primal = jnp.linalg.solve(z.T @ z + lam * jnp.eye(9), z.T @ targets)
    np.testing.assert_allclose(ridge_head(z, y, 4, lam), primal, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_svm_dual_is_feasible_and_has_no_duality_gap(c):
    z, y = _episode()
    alpha = svm_dual(z @ z.T, y, 4, c=c, iterations=3000)
    one_hot = jax.nn.one_hot(y, 4)
    assert float(jnp.max(alpha - c * one_hot)) < 1e-12  # alpha_n <= C onehot(y_n)
    np.testing.assert_allclose(alpha.sum(axis=1), 0.0, atol=1e-12)
    primal = _primal_svm(z.T @ alpha, z, y, c)
    dual = _dual_value(alpha, z, y)
    assert float(primal - dual) < 1e-7 * float(jnp.abs(primal))  # strong duality at the optimum
    assert float(primal - dual) >= -1e-9  # weak duality: the check is not vacuous
    # A feasible point that is not the optimum leaves a clear gap.
    assert float(_primal_svm(z.T @ (0.5 * alpha), z, y, c) - _dual_value(0.5 * alpha, z, y)) > 1e-3


def _central_difference(f, x, eps=1e-6):
    flat = np.asarray(x).ravel()
    out = np.zeros_like(flat)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        out[i] = (f(jnp.asarray((flat + step).reshape(x.shape)))
                  - f(jnp.asarray((flat - step).reshape(x.shape)))) / (2 * eps)
    return out.reshape(x.shape)


def _query_loss(head):
    zq, yq = _episode(seed=1)

    def loss(z, y):
        w = head(z, y)
        return jnp.mean(jax.nn.logsumexp(zq @ w, axis=1) - (zq @ w)[jnp.arange(len(yq)), yq])

    return loss


def test_gradient_through_the_ridge_head_matches_central_differences():
    z, y = _episode()
    loss = jax.jit(_query_loss(lambda f, lab: ridge_head(f, lab, 4, 0.5)))
    got = jax.grad(loss)(z, y)
    np.testing.assert_allclose(got, _central_difference(lambda f: float(loss(f, y)), z),
                               rtol=1e-6, atol=1e-9)


def test_implicit_gradient_through_the_svm_matches_central_differences():
    z, y = _episode()
    loss = jax.jit(_query_loss(lambda f, lab: f.T @ svm_dual(f @ f.T, lab, 4, c=1.0,
                                                             iterations=3000)))
    got = jax.grad(loss)(z, y)
    want = _central_difference(lambda f: float(loss(f, y)), z)
    assert np.abs(want).max() > 1e-3  # the solution moves with the features
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_closed_form_learners_meta_learn_their_head_settings():
    from metajax.nets import MLP
    from metajax.types import Task

    z, y = _episode(n_way=3, shots=2, dim=5)
    zq, yq = _episode(n_way=3, shots=3, dim=5, seed=2)
    task = Task(support_x=z, support_y=y, query_x=zq, query_y=yq, num_classes=3)
    for learner, names in [(r2d2(MLP((8,), 4)), {"log_lambda", "scale", "bias"}),
                           (metaoptnet(MLP((8,), 4), "svm", iterations=20), {"scale"}),
                           (metaoptnet(MLP((8,), 4), "ridge"), {"scale"})]:
        variables = learner.init(jax.random.PRNGKey(0), task)
        assert set(variables["params"]["head"]) == names
        grads = jax.grad(lambda v, fn=learner.loss: fn(v, task, None)[0])(variables)["params"]
        assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))
        assert learner.predict(variables, task, None).shape == (9, 3)


def test_metaoptnet_rejects_an_unknown_head_and_a_non_positive_c():
    from metajax.nets import MLP

    with pytest.raises(ValueError, match="head must be"):
        metaoptnet(MLP((8,), 4), "lasso")
    with pytest.raises(ValueError, match="c must be positive"):
        metaoptnet(MLP((8,), 4), c=0.0)

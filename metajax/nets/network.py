"""Any Flax module as two pure functions over its whole variables dict, so learners take users' own
networks unchanged.

Flax's conventions are followed: a module whose `__call__` has a `train` argument is called with it
(`train=True` in the inner loop and on the query set, unless a learner is asked for running
averages); every collection other than `params` (`batch_stats`, any other mutable collection) is
state, updated by the call in training mode and handed back; a key becomes the module's rngs, one
stream per name (`dropout`, and any other name the module asks for through `make_rng`). Modules
without a `train` argument (metajax's own nets) are called as before.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.types import Array, PRNGKey

Variables = dict[str, Any]
State = dict[str, Any]

PARAMS = "params"


def accepts_train(module: nn.Module, method: Callable | str | None = None) -> bool:
    """Whether `module`'s `__call__` (or `method`) takes a `train` argument (Flax's convention)."""
    if callable(method):
        fn = method
    else:
        fn = getattr(type(module), method or "__call__")
    try:
        return "train" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def split_variables(variables: Any) -> tuple[Any, State]:
    """`(params, state)`: the `params` collection (what gradients and optimisers touch) and every
    other collection (carried as state). A tree without a `params` key is all parameters."""
    if isinstance(variables, dict) and PARAMS in variables:
        return variables[PARAMS], {k: v for k, v in variables.items() if k != PARAMS}
    return variables, {}


def merge_variables(params: Any, state: State) -> Variables:
    """The inverse of `split_variables` for a network's variables: `{"params": params, **state}`."""
    return {**state, PARAMS: params}


def trainable_part(variables: Any) -> tuple[Any, State]:
    """`(trainable, state)` as the trainer sees a learner's variables: `{"params": ...}` and the
    other collections, or the whole tree and `{}` when it has no `params` key."""
    if isinstance(variables, dict) and PARAMS in variables:
        return {PARAMS: variables[PARAMS]}, {k: v for k, v in variables.items() if k != PARAMS}
    return variables, {}


def _name_hash(name: str) -> int:
    """A stable integer per rng stream name (Python's `hash` of a str changes between runs)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % (2**31 - 1)
    return h


def stream_keys(key: PRNGKey) -> dict[str, PRNGKey]:
    """`rngs=` for `module.apply`: a `dropout` key and a `params` key derived from `key`. Flax
    derives any other stream a module asks for (`self.make_rng("noise")`) from the `params` one and
    the stream's name, so every name gets its own key."""
    return {name: jax.random.fold_in(key, _name_hash(name)) for name in ("params", "dropout")}


class Network(NamedTuple):
    """A Flax module as pure functions.

    Attributes:
      init: `init(key, *inputs) -> variables`, the module's whole variables dict (`params` and
        any other collection, such as `batch_stats`), initialised in training mode.
      apply: `apply(variables, *inputs, key=None, train=True, method=None) -> (outputs, state)`:
        the module on `inputs`; `state` holds the non-`params` collections after the call (updated
        in training mode, unchanged otherwise). `key` feeds every rng stream the module asks for.
      module: the wrapped module.
      has_train: whether the module takes `train`.
    """

    init: Callable[..., Variables]
    apply: Callable[..., tuple[Array, State]]
    module: nn.Module
    has_train: bool


def network(module: nn.Module) -> Network:
    """Wraps `module` (any `flax.linen.Module`) as a `Network`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a flax.linen.Module, got {type(module).__name__}")
    has_train = accepts_train(module)

    def kwargs(train: bool, method) -> dict:
        takes = has_train if method is None else accepts_train(module, method)
        return {"train": train} if takes else {}

    def init(key: PRNGKey, *inputs, method=None) -> Variables:
        # `key` itself initialises `params`, as `module.init(key, ...)` does
        rngs = {**stream_keys(key), PARAMS: key}
        variables = module.init(rngs, *inputs, method=method, **kwargs(True, method))
        return dict(variables)

    def apply(variables: Variables, *inputs, key: PRNGKey | None = None, train: bool = True,
              method=None) -> tuple[Array, State]:
        _, state = split_variables(variables)
        rngs = None if key is None else stream_keys(key)
        mutable = list(state) if (train and state) else False
        out = module.apply(variables, *inputs, rngs=rngs, mutable=mutable, method=method,
                           **kwargs(train, method))
        if mutable:
            out, updates = out
            state = {**state, **dict(updates)}
        return out, state

    return Network(init, apply, module, has_train)


def same_dtypes(new: dict, old: dict) -> dict:
    """`new` cast leaf by leaf to the dtypes of `old`: a module's updated collections can come back
    in another precision (float32 running averages of float64 activations), and a loop carries
    them unchanged in type."""
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)


def mean_state(states: State) -> State:
    """The mean over a leading (task) axis of float leaves; integer leaves (counters) from the
    first task. How the trainer combines the tasks' updated collections."""
    return jax.tree.map(
        lambda s: s[0] if not jnp.issubdtype(s.dtype, jnp.inexact) else s.mean(axis=0), states)


__all__ = ["Network", "accepts_train", "mean_state", "merge_variables", "network", "same_dtypes",
           "split_variables", "stream_keys", "trainable_part"]

"""Memory-augmented neural network (Santoro et al. 2016): an LSTM controller with an external memory
written by Least Recently Used Access (LRUA), and the same-protocol baselines (LSTM, feed-forward).

Every cell maps `(state, inputs) -> (state, logits)` with the state an explicit pytree, so an episode
is a `lax.scan` of the cell over time (`unroll`) and nothing is hidden in Flax variables. The LRUA
step itself is a pure function of arrays (`lrua_step`), tested against hand-computed values.

LRUA, for read heads h = 1..H with keys `k_h` (emitted by the controller at step t):
  - least used: `w_lu` is the one-hot of the slot of smallest usage `w_u[t-1]`; that slot is set to
    zero before writing (the step many reimplementations forget);
  - write weights: `w_w[h] = sigmoid(alpha_h) * w_r[t-1, h] + (1 - sigmoid(alpha_h)) * w_lu`;
  - write: `M[t] = M[t-1] (least-used row zeroed) + sum_h w_w[h] k_h^T` (the key is written);
  - read: `w_r[t, h] = softmax_i(beta_h * cos(k_h, M[t, i]))`, `r_h = sum_i w_r[t, h, i] M[t, i]`;
  - usage: `w_u[t] = gamma * w_u[t-1] + sum_h w_r[t, h] + sum_h w_w[h]`.
The paper's softmax has no key strength (`beta = 1`); `key_strength=True` (default) lets the
controller emit `beta_h = 1 + softplus(.)` to sharpen reads over 128 slots, as in the NTM.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from metajax.types import Array, Params

MEMORY_INIT = 1e-6  # memory starts as a small constant so cosine similarities are defined
COSINE_EPS = 1e-8


@struct.dataclass
class MemoryState:
    """External memory and its addressing state.

    Attributes:
      memory: `[slots, width]`.
      usage: `[slots]` usage weights `w_u`.
      read_weights: `[heads, slots]` read weights of the previous step `w_r`.
      reads: `[heads, width]` vectors read at the previous step (fed back to the controller).
    """

    memory: Array
    usage: Array
    read_weights: Array
    reads: Array


def initial_memory(slots: int = 128, width: int = 40, heads: int = 4) -> MemoryState:
    """Constant memory, zero usage, every head reading slot 0, zero reads."""
    return MemoryState(
        memory=jnp.full((slots, width), MEMORY_INIT, jnp.float32),
        usage=jnp.zeros((slots,), jnp.float32),
        read_weights=jnp.zeros((heads, slots), jnp.float32).at[:, 0].set(1.0),
        reads=jnp.zeros((heads, width), jnp.float32),
    )


def cosine_similarity(keys: Array, memory: Array) -> Array:
    """`[H, W]`, `[S, W]` -> `[H, S]` cosine similarities."""
    dots = keys @ memory.T
    norms = jnp.linalg.norm(keys, axis=-1)[:, None] * jnp.linalg.norm(memory, axis=-1)[None, :]
    return dots / (norms + COSINE_EPS)


def least_used(usage: Array) -> Array:
    """One-hot `[S]` of the slot of smallest usage (the first one on ties)."""
    return jax.nn.one_hot(jnp.argmin(usage), usage.shape[0], dtype=usage.dtype)


def write_weights(read_weights: Array, least_used_weights: Array, alpha: Array) -> Array:
    """`w_w[h] = sigmoid(alpha_h) w_r[h] + (1 - sigmoid(alpha_h)) w_lu`: `[H, S]`."""
    gate = jax.nn.sigmoid(alpha)[:, None]
    return gate * read_weights + (1.0 - gate) * least_used_weights[None, :]


def lrua_step(state: MemoryState, keys: Array, alpha: Array, strength: Array | None = None,
              gamma: float = 0.99) -> tuple[MemoryState, Array]:
    """One LRUA write then read.

    Args:
      state: the previous step's memory state.
      keys: `[H, W]` keys, written to memory and used to address the reads.
      alpha: `[H]` logits of the write gate (sigmoid: previous-read vs least-used location).
      strength: `[H]` key strengths multiplying the cosine similarities (None: 1, the paper's).
      gamma: usage decay.

    Returns:
      The new `MemoryState` and the write weights `[H, S]`.
    """
    lu = least_used(state.usage)
    w_write = write_weights(state.read_weights, lu, alpha)
    memory = state.memory * (1.0 - lu)[:, None] + w_write.T @ keys
    similarity = cosine_similarity(keys, memory)
    if strength is not None:
        similarity = similarity * strength[:, None]
    w_read = jax.nn.softmax(similarity, axis=-1)
    usage = gamma * state.usage + w_read.sum(axis=0) + w_write.sum(axis=0)
    return MemoryState(memory, usage, w_read, w_read @ memory), w_write


@struct.dataclass
class MANNState:
    """The MANN cell's state: LSTM carry `(c, h)` and the external memory."""

    lstm: tuple[Array, Array]
    memory: MemoryState


def _lstm_carry(hidden: int) -> tuple[Array, Array]:
    return jnp.zeros((hidden,), jnp.float32), jnp.zeros((hidden,), jnp.float32)


def _step_input(x: Array, prev_label: Array) -> Array:
    return jnp.concatenate([x.reshape(-1), prev_label])


class MANNCell(nn.Module):
    """LSTM controller + LRUA memory; `(state, (x, prev_label)) -> (state, logits)`, unbatched.

    The controller reads `[x flattened, prev_label, previous reads]`; the logits (`num_outputs`:
    N classes, or the size of string labels) are a dense layer on `[controller output, reads]`.
    Defaults: 200 controller units, memory 128 x 40, 4 read heads, usage decay 0.99 (Santoro et
    al.).
    """

    num_outputs: int
    hidden: int = 200
    slots: int = 128
    width: int = 40
    heads: int = 4
    gamma: float = 0.99
    key_strength: bool = True

    def initial_state(self) -> MANNState:
        return MANNState(_lstm_carry(self.hidden),
                         initial_memory(self.slots, self.width, self.heads))

    @nn.compact
    def __call__(self, state: MANNState, inputs: tuple[Array, Array]) -> tuple[MANNState, Array]:
        x, prev_label = inputs
        controller_in = jnp.concatenate([_step_input(x, prev_label),
                                         state.memory.reads.reshape(-1)])
        carry, h = nn.OptimizedLSTMCell(self.hidden, name="controller")(state.lstm, controller_in)
        keys = jnp.tanh(nn.Dense(self.heads * self.width, name="keys")(h))
        keys = keys.reshape(self.heads, self.width)
        alpha = nn.Dense(self.heads, name="write_gate")(h)
        strength = None
        if self.key_strength:
            strength = 1.0 + nn.softplus(nn.Dense(self.heads, name="key_strength")(h))
        memory, _ = lrua_step(state.memory, keys, alpha, strength, self.gamma)
        logits = nn.Dense(self.num_outputs, name="output")(
            jnp.concatenate([h, memory.reads.reshape(-1)]))
        return MANNState(carry, memory), logits


class LSTMCell(nn.Module):
    """The LSTM baseline: the MANN controller alone (no memory), `(carry, inputs) -> (carry, logits)`."""

    num_outputs: int
    hidden: int = 200

    def initial_state(self) -> tuple[Array, Array]:
        return _lstm_carry(self.hidden)

    @nn.compact
    def __call__(self, state, inputs):
        carry, h = nn.OptimizedLSTMCell(self.hidden, name="controller")(state, _step_input(*inputs))
        return carry, nn.Dense(self.num_outputs, name="output")(h)


class FeedForwardCell(nn.Module):
    """The feed-forward baseline: a stateless MLP on `[x, prev_label]` (its state is `()`)."""

    num_outputs: int
    hidden: int = 200

    def initial_state(self) -> tuple:
        return ()

    @nn.compact
    def __call__(self, state, inputs):
        h = nn.relu(nn.Dense(self.hidden)(_step_input(*inputs)))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return state, nn.Dense(self.num_outputs, name="output")(h)


def unroll(cell: nn.Module, params: Params, xs: Array, prev_labels: Array):
    """Scans `cell` over an episode from its initial state: `[T, ...]`, `[T, N]` ->
    (final state, logits `[T, N]`)."""

    def step(state, inputs):
        return cell.apply(params, state, inputs)

    return jax.lax.scan(step, cell.initial_state(), (xs, prev_labels))


def init_cell(cell: nn.Module, key: Array, x: Array, prev_label: Array) -> Params:
    """Parameters of `cell` from one step's inputs `x [...]`, `prev_label [N]`."""
    return cell.init(key, cell.initial_state(), (x, prev_label))

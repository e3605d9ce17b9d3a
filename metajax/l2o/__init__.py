"""Learned optimisers (Andrychowicz et al. 2016): a coordinatewise LSTM optimiser meta-trained by
truncated backpropagation through time, exposed as an optax `GradientTransformation`."""

from metajax.l2o.lstm_optimizer import (
    LearnedOptimizerState,
    LSTMOptimizer,
    init_lstm_optimizer,
    learned_optimizer,
    load_lstm_optimizer,
    preprocess_gradient,
    propose_updates,
    save_lstm_optimizer,
)
from metajax.l2o.optimizees import MLP_VARIANTS, TaskFamily, mlp_family, quadratic_family

__all__ = [
    "LSTMOptimizer", "LearnedOptimizerState", "MLP_VARIANTS", "TaskFamily", "init_lstm_optimizer",
    "learned_optimizer", "load_lstm_optimizer", "mlp_family", "preprocess_gradient",
    "propose_updates", "quadratic_family", "save_lstm_optimizer",
]

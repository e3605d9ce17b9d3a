"""Meta-training loop, evaluation and device sharding."""

from metajax.training.evaluation import confidence_interval, evaluate
from metajax.training.trainer import (
    CheckpointExists,
    TrainingDiverged,
    TrainState,
    init_state,
    make_train_step,
    map_over_tasks,
    meta_batch_loss,
    meta_gradient,
    meta_update,
    restore_state,
    train,
)

__all__ = [
    "CheckpointExists", "TrainState", "TrainingDiverged", "confidence_interval", "evaluate",
    "init_state", "make_train_step", "map_over_tasks", "meta_batch_loss", "meta_gradient", "meta_update",
    "restore_state", "train",
]

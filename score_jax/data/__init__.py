"""Datasets for SCoRe: `Task` records, loaders, TFDS builders (no TensorFlow) and grain.

`tasks` has no heavy dependencies; the TFDS builders and the grain pipeline are
imported lazily (``score_jax.data.build_dataset`` etc. work as attributes).
"""

from score_jax.data.tasks import (
    DATASETS,
    KIND_OF,
    MBPP_SPLITS,
    Task,
    drop_overlap,
    extract_boxed,
    gsm8k_final_answer,
    load_tasks,
    resolve_splits,
    task_from_record,
    task_to_record,
)

_LAZY = {
    "ScoreTasks": "builders",
    "build_dataset": "builders",
    "make_builder": "builders",
    "load_data_source": "builders",
    "TaskLoader": "pipeline",
    "task_dataset": "pipeline",
}

__all__ = [
    "DATASETS",
    "KIND_OF",
    "MBPP_SPLITS",
    "Task",
    "drop_overlap",
    "extract_boxed",
    "gsm8k_final_answer",
    "load_tasks",
    "resolve_splits",
    "task_from_record",
    "task_to_record",
    *_LAZY,
]


def __getattr__(name):
  if name in _LAZY:
    import importlib

    mod = importlib.import_module(f"score_jax.data.{_LAZY[name]}")
    return getattr(mod, name)
  raise AttributeError(f"module 'score_jax.data' has no attribute {name!r}")

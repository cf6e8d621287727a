"""Grain pipeline: seeded shuffling, repetition and batching of `Task` records.

The source is any random-access sequence: a ``list[Task]`` (from
`tasks.load_tasks`) or a TFDS ``ArrayRecordDataSource`` (from
`builders.build_dataset`; records are decoded to `Task` on the fly).

    loader = TaskLoader(source, batch_size=64, seed=0)          # training: repeats forever
    batch = next(loader)                                          # list[Task]
    state = loader.get_state()                                    # JSON-able, e.g. {'next_index': 3}
    ...
    loader = TaskLoader(source, batch_size=64, seed=0); loader.set_state(state)

Determinism: the order is a pure function of (source, seed, shard, batch size);
each epoch is reshuffled with a seed derived from ``seed`` and the epoch, so a
restored loader continues with exactly the batches the original would have
produced.  ``get_state`` is grain's iterator state (the index of the next
batch), small enough to store in the training checkpoint's metadata.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain

from score_jax.data.tasks import Task, task_from_record

__all__ = ["task_dataset", "TaskLoader"]


def task_dataset(
    source: Sequence[Any],
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.MapDataset:
  """A ``grain.MapDataset`` whose element ``i`` is batch ``i`` (a ``list[Task]``).

  ``num_epochs=None`` repeats forever (training); use ``num_epochs=1,
  shuffle=False, drop_remainder=False`` for evaluation.  ``shard_index`` /
  ``shard_count`` give each host a disjoint slice (``source[shard_index::shard_count]``)
  before shuffling.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"bad shard {shard_index} of {shard_count}")
  n = len(source)
  if n == 0:
    raise ValueError("empty task source")
  ds = grain.MapDataset.source(source)
  if shard_count > 1:
    ds = ds[shard_index::shard_count]
  per_shard = len(ds)
  if drop_remainder and num_epochs is not None and per_shard * num_epochs < batch_size:
    raise ValueError(
        f"{per_shard} tasks x {num_epochs} epoch(s) is fewer than one batch of {batch_size}"
    )
  ds = ds.map(task_from_record)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)  # reshuffles each epoch (seeded) when shuffling
  return ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)


class TaskLoader:
  """Iterator over ``list[Task]`` batches with a checkpointable position."""

  def __init__(
      self,
      source: Sequence[Any],
      *,
      batch_size: int,
      seed: int = 0,
      read_options: grain.ReadOptions | None = None,
      **kwargs,
  ):
    """``kwargs`` go to `task_dataset`.  ``read_options`` defaults to one reader
    thread with a small prefetch: a batch of tasks is consumed per RL step, far
    slower than it is read, and grain's default (16 threads, 500 elements)
    only burns CPU."""
    self.dataset = task_dataset(source, batch_size=batch_size, seed=seed, **kwargs)
    if read_options is None:
      read_options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)
    self._iter = iter(self.dataset.to_iter_dataset(read_options))

  def __iter__(self) -> "TaskLoader":
    return self

  def __next__(self) -> list[Task]:
    return next(self._iter)

  def __len__(self) -> int:
    """Number of batches (huge for an infinitely repeating loader)."""
    return len(self.dataset)

  def get_state(self) -> dict[str, Any]:
    return dict(self._iter.get_state())

  def set_state(self, state: dict[str, Any]) -> None:
    self._iter.set_state(dict(state))

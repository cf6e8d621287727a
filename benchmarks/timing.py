"""Shared by the benchmarks: how one measurement is timed."""

from __future__ import annotations

import time

import jax
import numpy as np


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` over `repeats` runs, after one untimed run (compile, warm-up);
  each run waits for its device results."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))

"""The optimizer: one factory for RL and SFT (they differ in the schedule and numbers)."""

from __future__ import annotations

import optax


def adam(
    schedule, *, grad_clip: float, b1: float = 0.9, b2: float = 0.999, weight_decay: float = 0.0
) -> optax.GradientTransformation:
  """The one optimizer factory: global-norm clipping (0 = off), then AdamW on `schedule`
  (RL and SFT differ only in the schedule and the numbers)."""
  parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)

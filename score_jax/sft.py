"""Supervised fine-tuning on (context, response) token pairs, loss on the response only.

Used to build the embedded base model (first attempts only) and by the STaR and Pair-SFT
baselines (SFT on self-generated traces). Examples are packed into fixed-length rows
(`pack`), so every step has the same shapes and compiles once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from score_jax import optim, teacher_forcing

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  steps: int = 300
  batch_size: int = 128
  seq_len: int = 64
  learning_rate: float = 3e-3
  warmup_steps: int = 30
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  log_every: int = 50

  def __post_init__(self):
    for f in ("steps", "batch_size", "seq_len"):
      if getattr(self, f) < 1:
        raise ValueError(f"SFTConfig.{f}={getattr(self, f)}: must be positive")
    if self.learning_rate <= 0:
      raise ValueError(f"SFTConfig.learning_rate={self.learning_rate}: must be positive")


# (context ids, response ids), or a conversation: (context 1, response 1, context 2, ...).
Example = tuple[Sequence[int], ...]


def pack(examples: Sequence[Example], seq_len: int, pad_id: int = 0):
  """Right-padded rows: tokens, input_mask and loss_mask (response tokens) [N, seq_len].

  An example alternates context and response segments; the loss covers every response."""
  n = len(examples)
  tokens = np.full((n, seq_len), pad_id, np.int32)
  input_mask = np.zeros((n, seq_len), bool)
  loss_mask = np.zeros((n, seq_len), bool)
  for r, segments in enumerate(examples):
    if len(segments) % 2:
      raise ValueError(
          f"SFT example {r} has {len(segments)} segments; expected (context, " "response) pairs"
      )
    total = sum(len(x) for x in segments)
    if total > seq_len:
      raise ValueError(f"SFT example {r} has {total} tokens, more than seq_len={seq_len}")
    at = 0
    for i, seg in enumerate(segments):
      tokens[r, at : at + len(seg)] = seg
      loss_mask[r, at : at + len(seg)] = i % 2 == 1
      at += len(seg)
    input_mask[r, :at] = True
  return tokens, input_mask, loss_mask


def make_optimizer(cfg: SFTConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1)
  )
  return optim.adam(schedule, grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay)


def make_step(graphdef, optimizer):
  """Jitted (params, opt_state, tokens, input_mask, loss_mask) -> (params, opt_state, loss)."""

  def loss_fn(params, tokens, input_mask, loss_mask):
    model = nnx.merge(graphdef, params)
    logp = teacher_forcing.sequence_logprobs(model, tokens, input_mask)
    return -(logp * loss_mask).sum() / jnp.maximum(loss_mask.sum(), 1)

  def step(params, opt_state, tokens, input_mask, loss_mask):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, input_mask, loss_mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def finetune(
    model: nnx.Module,
    batch_fn: Callable[[int], Sequence[Example]],
    cfg: SFTConfig,
    pad_id: int = 0,
    progress: Callable[[int, float], None] | None = None,
):
  """Trains `model` in place on `batch_fn(step)` (a list of `cfg.batch_size` examples).

  Returns the per-step losses. `progress(step, loss)` is called every `cfg.log_every` steps.
  """
  graphdef, params = nnx.split(model)
  params = jax.tree.map(jnp.copy, params)  # donated below; keep the caller's arrays intact
  optimizer = make_optimizer(cfg)
  opt_state = optimizer.init(params)
  step_fn = make_step(graphdef, optimizer)
  losses = []
  t0 = time.perf_counter()
  for s in range(cfg.steps):
    examples = batch_fn(s)
    if len(examples) != cfg.batch_size:
      raise ValueError(
          f"batch_fn({s}) gave {len(examples)} examples; expected "
          f"SFTConfig.batch_size={cfg.batch_size}"
      )
    params, opt_state, loss = step_fn(params, opt_state, *pack(examples, cfg.seq_len, pad_id))
    if cfg.log_every and ((s + 1) % cfg.log_every == 0 or s + 1 == cfg.steps):
      loss = float(loss)
      if progress is not None:
        progress(s + 1, loss)
      logger.info(
          "sft step %d/%d loss %.4f (%.1fs)", s + 1, cfg.steps, loss, time.perf_counter() - t0
      )
    losses.append(loss)
  nnx.update(model, params)
  return [float(x) for x in losses]

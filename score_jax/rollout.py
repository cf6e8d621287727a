"""Rollouts: tasks -> sampled attempts (device) -> scores (host), laid out for the loss.

`collect_async` runs the compiled multi-turn sampler and lays the attempts out as compact
per-row sequences [prompt, y1, instruction, y2] (still on device, not waited for); the caller
can dispatch more device work (the reference model's log-probs) before `Pending.score()`
pulls the attempts to the host and grades them, so grading overlaps with device work.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sampler as sampler_lib, sharding, teacher_forcing
from score_jax.environments.base import Environment, Scores

Array = jax.Array


def _right_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int, too_long):
  """-> ([N, length] right-padded, lengths [N]); too_long(i, n) words the error."""
  lens = np.array([len(r) for r in rows], np.int32)
  if (lens > length).any():
    i = int(np.argmax(lens))
    raise ValueError(too_long(i, lens[i]))
  out = np.full((len(rows), length), pad_id, np.int32)
  for i, r in enumerate(rows):
    out[i, : len(r)] = r
  return out, lens


def pad_prompts(prompts: Sequence[Sequence[int]], bucket: int, pad_id: int):
  return _right_pad(
      prompts,
      bucket,
      pad_id,
      lambda i, n: f"prompt {i} has {n} tokens; the " f"prompt bucket is {bucket}",
  )


def pad_instructions(instructions: Sequence[Sequence[int]], length: int, pad_id: int):
  """Per-task instruction ids -> ([B, length] right-padded, lengths [B])."""
  return _right_pad(
      instructions,
      length,
      pad_id,
      lambda i, n: f"the instruction of task {i} "
      f"has {n} tokens, more than sampler.instruction_len={length}",
  )


def turn_token_lists(out: sampler_lib.SampleOutput) -> list[list[list[int]]]:
  """Host copy of the generated tokens: [turn][row] -> list of ids (stop token included)."""
  result = []
  for turn in out.turns:
    toks, mask = sharding.to_host((turn.tokens, turn.mask))  # whole rows, also multi-host
    result.append([t[m].tolist() for t, m in zip(toks, mask)])
  return result


@flax.struct.dataclass
class TrainBatch:
  """One step's rows as the loss takes them (R rows, task-major; T turns; L positions).

  Rows are compact sequences [prompt, y1, instruction, y2]; `turn_masks[t]` marks attempt
  t's tokens. `advantages` is None until the train step computes it over the whole batch
  (the baselines see every group), before the rows are split into micro-batches."""

  tokens: jax.Array  # [R, L] int32
  input_mask: jax.Array  # [R, L] bool: real tokens (prompt, attempts, instruction)
  turn_masks: jax.Array  # [T, R, L] bool
  ref_logprobs: jax.Array  # [R, L] float32: the frozen reference's, teacher-forced
  rewards: jax.Array  # [T, R] float32: 1.0 correct, 0.0 otherwise
  advantages: jax.Array | None = None  # [T, R] float32
  # [T, R] float32: each attempt's summed log-prob under the policy when it was sampled (at
  # the temperature): with the reference's, the sequence KL's log-ratio (losses, 'sequence').
  attempt_logprobs: jax.Array | None = None

  def check(self) -> None:
    """Shapes and dtypes of the layout above (at trace time, inside jit)."""
    r, l = self.tokens.shape
    t = self.turn_masks.shape[0]
    chex.assert_shape([self.input_mask, self.ref_logprobs], (r, l))
    chex.assert_shape(self.turn_masks, (t, r, l))
    chex.assert_shape(self.rewards, (t, r))
    chex.assert_type([self.ref_logprobs, self.rewards], jnp.float32)
    for per_attempt in (self.advantages, self.attempt_logprobs):
      if per_attempt is not None:
        chex.assert_shape(per_attempt, (t, r))

  def micro_batches(self, num_micro: int) -> "TrainBatch":
    """The rows in `num_micro` consecutive groups: every field gets a leading [M] axis and
    R/M rows (scan over it for exact accumulation)."""

    def split(x, axis):  # [.., R, ..] -> [M, .., R/M, ..]
      x = jnp.moveaxis(x, axis, 0)
      x = x.reshape((num_micro, x.shape[0] // num_micro) + x.shape[1:])
      return jnp.moveaxis(x, 1, axis + 1)

    turn_major = lambda x: None if x is None else split(x, 1)
    return TrainBatch(
        tokens=split(self.tokens, 0),
        input_mask=split(self.input_mask, 0),
        turn_masks=split(self.turn_masks, 1),
        ref_logprobs=split(self.ref_logprobs, 0),
        rewards=split(self.rewards, 1),
        advantages=turn_major(self.advantages),
        attempt_logprobs=turn_major(self.attempt_logprobs),
    )


@dataclasses.dataclass
class Pending:
  """Attempts sampled (possibly still computing on device), not yet scored."""

  env: Environment
  row_tasks: list
  out: sampler_lib.SampleOutput
  tokens: Array  # [R, L]
  input_mask: Array  # [R, L]
  turn_masks: Array  # [T, R, L]

  def score(self) -> list[Scores]:
    return [self.env.score(self.row_tasks, ids) for ids in turn_token_lists(self.out)]

  def batch(self, scores: Sequence[Scores], ref_logprobs: jax.Array) -> TrainBatch:
    """The train step's input: these rows with their rewards and reference log-probs."""
    rewards = jnp.asarray(np.stack([s.rewards for s in scores]), jnp.float32)
    return TrainBatch(
        tokens=self.tokens,
        input_mask=self.input_mask,
        turn_masks=self.turn_masks,
        ref_logprobs=ref_logprobs,
        rewards=rewards,
        attempt_logprobs=_attempt_logprobs(self.out),
    )


@jax.jit
def _attempt_logprobs(out: sampler_lib.SampleOutput) -> Array:
  """[T, R]: each attempt's summed log-prob at sampling (padding after a stop counts 0)."""
  return jnp.stack([jnp.sum(jnp.where(t.mask, t.logprobs, 0.0), -1) for t in out.turns])


_assemble = jax.jit(teacher_forcing.assemble_sequences, static_argnames=("pad_id",))


def collect_async(
    sampler: sampler_lib.Sampler, params, env: Environment, tasks: Sequence[Any], key: Array
) -> Pending:
  """Samples every turn for `tasks`; rows are task-major (task i -> rows i*n .. i*n+n-1)."""
  cfg = sampler.cfg
  prompt_ids = env.prompt_tokens(tasks)
  bucket = cfg.bucket(max(len(p) for p in prompt_ids))
  prompts, lens = pad_prompts(prompt_ids, bucket, env.pad_id)
  if cfg.num_turns > 1:
    instr, instr_lens = pad_instructions(env.instructions(tasks), cfg.instruction_len, env.pad_id)
    out = sampler(params, prompts, lens, instr, instr_lens, key)
  else:
    instr = np.zeros((1, 0), np.int32)
    out = sampler(params, prompts, lens, None, None, key)
  seq, valid, turn_masks = _assemble(out, prompts, instr, env.pad_id)
  rows = len(tasks) * cfg.rows_per_prompt
  chex.assert_shape([seq, valid], (rows, None))  # [R, L]
  chex.assert_shape(turn_masks, (cfg.num_turns, rows, seq.shape[1]))  # [T, R, L]
  row_tasks = [t for t in tasks for _ in range(cfg.rows_per_prompt)]
  return Pending(
      env=env, row_tasks=row_tasks, out=out, tokens=seq, input_mask=valid, turn_masks=turn_masks
  )

"""Teacher forcing: the sampled conversation laid out as one sequence per row, and the
log-probs of its tokens under a model (the train step, the reference pass and SFT).

Kept apart from the sampler, which only generates: scoring a sequence needs a model, not a
sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
  from score_jax.model import Transformer
  from score_jax.sampler import SampleOutput

Array = jax.Array


def assemble_sequences(out: "SampleOutput", prompts: Array, instructions: Array, pad_id: int = 0):
  """Compact per-row sequences [prompt, y1, instr, y2, ...] for teacher forcing.

  Returns (tokens [R, L], input_mask [R, L], turn_masks [num_turns, R, L]) where
  turn_masks[t] marks the generated tokens of turn t (the tokens whose log-probs were
  returned). R = B * rows per prompt, L = the cache length.
  """
  n = out.turns[0].tokens.shape[0] // prompts.shape[0]
  prompts = jnp.repeat(jnp.asarray(prompts), n, axis=0)
  rows_total = prompts.shape[0]
  instructions = jnp.asarray(instructions)
  if instructions.ndim == 1:
    instructions = instructions[None]
  instructions = jnp.broadcast_to(
      instructions if instructions.shape[0] == 1 else jnp.repeat(instructions, n, axis=0),
      (rows_total, instructions.shape[1]),
  )
  length = out.cache.max_len
  seq = jnp.full((rows_total, length), pad_id, jnp.int32)
  valid = jnp.zeros((rows_total, length), bool)
  turn_masks = []
  rows = jnp.arange(rows_total)[:, None]
  offset = jnp.zeros((rows_total,), jnp.int32)

  def put(seq, valid, offset, tokens, mask):
    idx = offset[:, None] + jnp.cumsum(mask, -1) - 1
    idx = jnp.where(mask, idx, length)  # invalid tokens are dropped
    seq = seq.at[rows, idx].set(tokens, mode="drop")
    valid = valid.at[rows, idx].set(True, mode="drop")
    return seq, valid, offset + mask.sum(-1).astype(jnp.int32)

  p_mask = jnp.arange(prompts.shape[1])[None] < out.prompt_lens[:, None]
  seq, valid, offset = put(seq, valid, offset, prompts, p_mask)
  for i, turn in enumerate(out.turns):
    if i:
      i_mask = jnp.arange(instructions.shape[1])[None] < out.instruction_lens[:, None]
      seq, valid, offset = put(seq, valid, offset, instructions, i_mask)
    before = valid
    seq, valid, offset = put(seq, valid, offset, turn.tokens, turn.mask)
    turn_masks.append(valid & ~before)
  return seq, valid, jnp.stack(turn_masks)


def sequence_logprobs(
    model: "Transformer", tokens: Array, input_mask: Array, temperature: float = 1.0
) -> Array:
  """Teacher-forced fp32 log-prob of each token given its prefix; [R, L] (0 at position 0)."""
  logits = model(tokens, input_mask) / temperature
  lp = jnp.take_along_axis(
      jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1), tokens[:, 1:, None], -1
  )[..., 0]
  return jnp.pad(lp, ((0, 0), (1, 0)))


def gather_turn_logprobs(seq_logprobs: Array, turn_mask: Array, budget: int) -> Array:
  """Scatters per-position log-probs of one turn back to [R, budget] turn layout."""
  idx = jnp.cumsum(turn_mask, -1) - 1
  idx = jnp.where(turn_mask, idx, budget)
  rows = jnp.arange(seq_logprobs.shape[0])[:, None]
  out = jnp.zeros((seq_logprobs.shape[0], budget), jnp.float32)
  return out.at[rows, idx].set(seq_logprobs, mode="drop")

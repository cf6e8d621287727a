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


# The output layer's logits are computed for at most this many (position, vocabulary) entries
# at a time (fp32: 1 GiB): Gemma's 262k vocabulary at 8 rows x 1,024 tokens would otherwise
# hold [R, L, V] = 8.6 GB per copy, forward and backward.
LOGITS_CHUNK_ELEMENTS = 1 << 28


def sequence_logprobs(
    model: "Transformer",
    tokens: Array,
    input_mask: Array,
    temperature: float = 1.0,
    chunk_elements: int = LOGITS_CHUNK_ELEMENTS,
) -> Array:
  """Teacher-forced fp32 log-prob of each token given its prefix; [R, L] (0 at position 0).

  When the [R, L-1, V] logits would exceed `chunk_elements`, the output layer runs over
  consecutive chunks of positions under rematerialisation (`jax.checkpoint` inside a
  `lax.map`): the full logits never exist, forward or backward; each chunk's are recomputed
  in the backward pass. 0 = all at once."""
  hidden = model.hidden(tokens, input_mask)[:, :-1]  # [R, L-1, D]
  targets = tokens[:, 1:]
  r, l1, d = hidden.shape
  vocab = model.cfg.vocab_size

  def token_logprobs(h, t):  # [..., D], [...] -> [...]
    logits = model.logits(h) / temperature
    return jnp.take_along_axis(
        jax.nn.log_softmax(logits.astype(jnp.float32), -1), t[..., None], -1
    )[..., 0]

  n = r * l1
  if not chunk_elements or n * vocab <= chunk_elements:
    lp = token_logprobs(hidden, targets)
  else:
    c = max(1, chunk_elements // vocab)  # positions per chunk
    k = -(-n // c)
    pad = k * c - n
    h = jnp.pad(hidden.reshape(n, d), ((0, pad), (0, 0))).reshape(k, c, d)
    t = jnp.pad(targets.reshape(n), (0, pad)).reshape(k, c)
    lp = jax.lax.map(lambda xs: jax.checkpoint(token_logprobs)(*xs), (h, t))
    lp = lp.reshape(k * c)[:n].reshape(r, l1)
  return jnp.pad(lp, ((0, 0), (1, 0)))


def gather_turn_logprobs(seq_logprobs: Array, turn_mask: Array, budget: int) -> Array:
  """Scatters per-position log-probs of one turn back to [R, budget] turn layout."""
  idx = jnp.cumsum(turn_mask, -1) - 1
  idx = jnp.where(turn_mask, idx, budget)
  rows = jnp.arange(seq_logprobs.shape[0])[:, None]
  out = jnp.zeros((seq_logprobs.shape[0], budget), jnp.float32)
  return out.at[rows, idx].set(seq_logprobs, mode="drop")

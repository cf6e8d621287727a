"""Rollouts: tasks -> two sampled attempts -> rewards, carried in one pytree (Tunix-style).

An `Environment` says how a task becomes prompt tokens, which instruction tokens ask for the
correction, and how an attempt is scored. `collect` runs the compiled multi-turn sampler,
scores every attempt on the host, and lays the attempts out as compact per-row sequences
[prompt, y1, instruction, y2] that the loss re-scores by teacher forcing.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sampler as sampler_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Scores:
  """Rewards of one turn for every row: 1.0 correct, 0.0 otherwise, with reasons."""

  rewards: np.ndarray
  reasons: list[str]
  texts: list[str]


class Environment(abc.ABC):
  """A task family seen through one tokenizer."""

  pad_id: int = 0
  stop_ids: tuple[int, ...] = (1,)

  @abc.abstractmethod
  def prompt_tokens(self, tasks: Sequence[Any]) -> list[list[int]]:
    """Turn-1 prompt token ids of each task (BOS and chat template included)."""

  @abc.abstractmethod
  def instruction_tokens(self) -> list[int]:
    """The tokens appended after each row's first attempt (end of turn + instruction)."""

  @abc.abstractmethod
  def score(self, tasks: Sequence[Any], attempts: Sequence[Sequence[int]]) -> Scores:
    """Scores generated token ids; tasks[i] is the problem of attempts[i]."""


@flax.struct.dataclass
class Rollout:
  """One batch of attempts, ready for reference scoring and the loss.

  tokens, input_mask: [R, L] compact sequences; turn_masks: [T, R, L] the generated tokens of
  each turn; rewards: [T, R]; sample_logprobs: [T, R, budget] log-probs at sampling time.
  R = prompts * num_samples, rows of one prompt adjacent.
  """

  tokens: Array
  input_mask: Array
  turn_masks: Array
  rewards: Array
  sample_logprobs_raw: tuple[Array, ...]
  turn_tokens: tuple[Array, ...]
  turn_mask_compact: tuple[Array, ...]


def pad_prompts(prompts: Sequence[Sequence[int]], bucket: int, pad_id: int):
  lens = np.array([len(p) for p in prompts], np.int32)
  if (lens > bucket).any():
    i = int(np.argmax(lens))
    raise ValueError(f"prompt {i} has {lens[i]} tokens; the largest prompt bucket is {bucket}")
  out = np.full((len(prompts), bucket), pad_id, np.int32)
  for i, p in enumerate(prompts):
    out[i, :len(p)] = p
  return out, lens


def collect(sampler: sampler_lib.Sampler, params, env: Environment, tasks: Sequence[Any],
            key: Array) -> tuple[Rollout, list[Scores], sampler_lib.SampleOutput]:
  """Samples every turn for `tasks` and scores the attempts on the host."""
  cfg = sampler.cfg
  prompt_ids = env.prompt_tokens(tasks)
  bucket = cfg.bucket(max(len(p) for p in prompt_ids))
  prompts, lens = pad_prompts(prompt_ids, bucket, env.pad_id)
  instr = np.asarray(env.instruction_tokens(), np.int32)
  out = sampler(params, prompts, lens, instr if cfg.num_turns > 1 else None, None, key)
  seq, valid, turn_masks = sampler_lib.assemble_sequences(out, prompts, instr, env.pad_id)
  n = cfg.num_samples
  row_tasks = [t for t in tasks for _ in range(n)]
  scores = []
  for turn in out.turns:
    toks, mask = np.asarray(turn.tokens), np.asarray(turn.mask)
    scores.append(env.score(row_tasks, [t[m].tolist() for t, m in zip(toks, mask)]))
  rollout = Rollout(
      tokens=seq, input_mask=valid, turn_masks=turn_masks,
      rewards=jnp.asarray(np.stack([s.rewards for s in scores]), jnp.float32),
      sample_logprobs_raw=tuple(t.logprobs_raw for t in out.turns),
      turn_tokens=tuple(t.tokens for t in out.turns),
      turn_mask_compact=tuple(t.mask for t in out.turns))
  return rollout, scores, out

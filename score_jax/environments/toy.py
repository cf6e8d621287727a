"""A token-level task with no tokenizer, for smoke runs and tests of the RL machinery."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from score_jax.environments.base import Environment, Scores, check_pairs


@dataclasses.dataclass(frozen=True)
class ToyTask:
  """Prompt ids [BOS, y, x]; x's parity is the answer."""

  x: int
  y: int

  @property
  def id(self) -> str:
    return f"{self.x}-{self.y}"

  @property
  def prompt(self) -> str:
    return f"{self.y} {self.x}"


class ToyEnvironment(Environment):
  """A token-level task with no tokenizer, for smoke runs and tests of the RL machinery.

  Prompt: [BOS, y, x]; an attempt is correct iff its first token has the parity of x and is
  not a special token. A random policy starts near 1/2; learning it needs the prompt.
  """

  BOS, EOS, PAD = 1, 2, 0
  FIRST = 3  # first ordinary token
  kind = "toy"

  def __init__(self, vocab_size: int = 32, instruction: Sequence[int] = (30, 31)):
    self._vocab_size = vocab_size
    self.pad_id = self.PAD
    self.stop_ids = (self.EOS,)
    self._instruction = list(instruction)

  def _tasks(self, rng, n):
    xy = rng.integers(self.FIRST, self.vocab_size, (n, 2))
    return [ToyTask(x=int(a), y=int(b)) for a, b in xy]

  def prompt_tokens(self, tasks):
    return [[self.BOS, t.y, t.x] for t in tasks]

  def instruction_tokens(self):
    return self._instruction

  def score(self, tasks, attempts):
    check_pairs(tasks, attempts)
    ok = [bool(a) and a[0] >= self.FIRST and a[0] % 2 == t.x % 2 for t, a in zip(tasks, attempts)]
    return Scores(
        rewards=np.asarray(ok, np.float32),
        reasons=["correct" if o else "wrong_answer" for o in ok],
        texts=[" ".join(map(str, a)) for a in attempts],
    )

  def train_batches(self, batch_size, seed):
    return lambda step: self._tasks(np.random.default_rng([seed, step, 0]), batch_size)

  def eval_tasks(self, n):
    return self._tasks(np.random.default_rng([12345, 1]), n)

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  def decode(self, ids):
    return " ".join(map(str, ids))

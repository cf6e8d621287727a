"""Sorting: a procedural problem family where checking an answer is easier than producing it.

    Numbers: 12 5 9 17 3 8
    Sort the numbers from smallest to largest.
    -> 3 5 8 9 12 17

Producing the answer is a global operation (find the smallest remaining number, again and
again); checking one is local: every number must be smaller than the next one, and the
numbers must be the given ones. So is fixing a typical slip: two neighbours in the wrong
order are swapped back, the rest is copied. The checker is exact.

The careless solver the base model learns from (`noisy_attempt`) has one habit: with
probability `noise` it writes a run of consecutive values (8 9, or 11 12 13) in the wrong
order (9 8, 13 12 11). The result is visible on inspection: it is not ascending.

Problems are a pure function of (split, index), as in `pair_sum`: unlimited fresh training
problems, a fixed held-out set, splits disjoint by a content hash.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from score_jax.rewards import types as reasons
from score_jax.tasks import splits

QUESTION = "Sort the numbers from smallest to largest."
_ANSWER = re.compile(r"^\s*(\d+(?:\s+\d+)*)\s*$")


@dataclasses.dataclass(frozen=True)
class Spec:
  """The difficulty knobs: how many numbers, drawn from 1..max_value."""

  count: int = 6
  max_value: int = 40

  def __post_init__(self):
    if self.count < 2:
      raise ValueError(f"Spec.count={self.count}: sorting needs at least 2 numbers")
    if self.max_value < self.count:
      raise ValueError(
          f"Spec.max_value={self.max_value}: needs at least count={self.count}" " distinct values"
      )


@dataclasses.dataclass(frozen=True)
class Problem:
  id: str
  numbers: tuple[int, ...]

  @property
  def prompt(self) -> str:
    return f"Numbers: {' '.join(map(str, self.numbers))}\n{QUESTION}"

  @property
  def solution(self) -> tuple[int, ...]:
    return tuple(sorted(self.numbers))

  @property
  def answer(self) -> str:
    return format_answer(self.solution)


def format_answer(numbers) -> str:
  return " ".join(map(str, numbers))


def runs(sorted_numbers) -> list[list[int]]:
  """Maximal runs of consecutive values: [3, 5, 6, 7, 9] -> [[3], [5, 6, 7], [9]]."""
  out: list[list[int]] = []
  for x in sorted_numbers:
    if out and x == out[-1][-1] + 1:
      out[-1].append(x)
    else:
      out.append([x])
  return out


def noisy_attempt(p: Problem, rng: np.random.Generator, noise: float) -> str:
  """The careless solver: each run of consecutive values is reversed with probability
  `noise` (so a list without such a run is always sorted right)."""
  out = []
  for run in runs(p.solution):
    out.extend(run[::-1] if len(run) > 1 and rng.random() < noise else run)
  return format_answer(out)


def problem(split: str, index: int, spec: Spec = Spec(), seed: int = 0) -> Problem:
  """The `index`-th problem of `split` ('sft', 'train' or 'eval'); deterministic."""
  rng = splits.split_rng(split, index, seed, 7)
  want_eval = split == "eval"
  while True:
    numbers = tuple(
        int(x) for x in rng.choice(np.arange(1, spec.max_value + 1), spec.count, replace=False)
    )
    if splits.is_eval(f"sort|{numbers}") == want_eval:
      return Problem(id=f"{split}/{seed}/{index}", numbers=numbers)


def problems(split: str, start: int, n: int, spec: Spec = Spec(), seed: int = 0):
  return [problem(split, i, spec, seed) for i in range(start, start + n)]


def parse_answer(text: str) -> tuple[int, ...] | None:
  m = _ANSWER.match(text)
  return tuple(int(x) for x in m.group(1).split()) if m else None


def check(p: Problem, text: str) -> tuple[float, str]:
  """(reward, reason): 1.0 iff the answer is exactly the given numbers in ascending order."""
  got = parse_answer(text)
  if got is None:
    return 0.0, reasons.NO_ANSWER
  return (1.0, reasons.CORRECT) if got == p.solution else (0.0, reasons.WRONG_ANSWER)

"""Pair sums: a procedural problem family where checking an answer is easier than finding it.

    Numbers: 12 5 9 17 3 8
    Target: 20
    Which two numbers add up to the target?
    -> 3 + 17 = 20

Exactly one pair of the (distinct) numbers adds up to the target. Finding it is a search
over all pairs; checking an attempt is working out its sum and comparing it with the target.
An attempt writes that check: "3 + 9 = 12 ≠ 20" marks a pair that misses the target, so a
mistake stays visible to a second attempt with the first one in its context. An answer is
correct when it names two different given numbers that add up to the target and its working,
if written, is true (a false sum or verdict scores 0: RL cannot erase the check that makes a
mistake visible). The checker is exact.

Problems are a pure function of (split, index): unlimited fresh training problems, and a
fixed held-out set, disjoint by a content hash (`score_jax.tasks.splits`).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from score_jax.rewards import types as reasons
from score_jax.tasks import splits

QUESTION = "Which two numbers add up to the target?"
_ANSWER = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*(?:=\s*(\d+)\s*(?:≠\s*(\d+)\s*)?)?$")


@dataclasses.dataclass(frozen=True)
class Spec:
  """The difficulty knobs: how many numbers, drawn from 1..max_value."""

  count: int = 6
  max_value: int = 20

  def __post_init__(self):
    if self.count < 2:
      raise ValueError(f"Spec.count={self.count}: a pair needs at least 2 numbers")
    if self.max_value < self.count + 1:
      raise ValueError(
          f"Spec.max_value={self.max_value}: needs more than count={self.count}" " distinct values"
      )


@dataclasses.dataclass(frozen=True)
class Problem:
  """One problem; `solution` is the unique pair (smaller first)."""

  id: str
  numbers: tuple[int, ...]
  target: int
  solution: tuple[int, int]

  @property
  def prompt(self) -> str:
    nums = " ".join(map(str, self.numbers))
    return f"Numbers: {nums}\nTarget: {self.target}\n{QUESTION}"

  @property
  def answer(self) -> str:
    return format_answer(*self.solution, self.target)


def format_answer(a: int, b: int, target: int) -> str:
  """An attempt at the pair (a, b) with its check worked out: the sum, and "≠ target" when
  it misses. (" ≠" rather than ", not": BPE would merge " 12," into one piece, and a model
  then stops writing true sums.)"""
  return f"{a} + {b} = {a + b}" + ("" if a + b == target else f" ≠ {target}")


def noisy_attempt(
    p: Problem, rng: np.random.Generator, noise: float, habit: float = 0.0, habit_above: int = 22
) -> str:
  """A first attempt of a careless but honest solver: with probability `noise` a wrong pair
  of the given numbers, always with its true check (so the mistake is visible).

  `habit`: a systematic slip on top: when the target is large (> `habit_above`), with
  probability `habit` the solver just adds the first two numbers it reads. A model trained
  on this makes that slip greedily on such problems, though it has seen them solved."""
  if habit and p.target > habit_above and rng.random() < habit:
    return format_answer(*sorted(p.numbers[:2]), p.target)
  if rng.random() < noise:
    while True:
      a, b = sorted(int(x) for x in rng.choice(p.numbers, 2, replace=False))
      if (a, b) != p.solution:
        return format_answer(a, b, p.target)
  return p.answer


def _pairs_summing_to(numbers, target) -> list[tuple[int, int]]:
  s = set(numbers)
  return sorted(
      {
          (min(a, target - a), max(a, target - a))
          for a in numbers
          if target - a in s and target - a != a
      }
  )


def problem(split: str, index: int, spec: Spec = Spec(), seed: int = 0) -> Problem:
  """The `index`-th problem of `split` ('sft', 'train' or 'eval'); deterministic."""
  rng = splits.split_rng(split, index, seed)
  want_eval = split == "eval"
  while True:  # rejection sampling: unique pair, right side of the split
    numbers = tuple(
        int(x) for x in rng.choice(np.arange(1, spec.max_value + 1), spec.count, replace=False)
    )
    i, j = rng.choice(spec.count, 2, replace=False)
    target = numbers[i] + numbers[j]
    pairs = _pairs_summing_to(numbers, target)
    if len(pairs) == 1 and splits.is_eval(f"{numbers}|{target}") == want_eval:
      return Problem(
          id=f"{split}/{seed}/{index}", numbers=numbers, target=target, solution=pairs[0]
      )


def problems(split: str, start: int, n: int, spec: Spec = Spec(), seed: int = 0):
  return [problem(split, i, spec, seed) for i in range(start, start + n)]


def parse_answer(text: str) -> tuple[int, int] | None:
  """'3 + 17 = 20', '3 + 9 = 12 ≠ 20' or '3 + 17' -> the pair; anything else -> None."""
  m = _ANSWER.match(text)
  return (int(m.group(1)), int(m.group(2))) if m else None


def working_is_true(p: Problem, text: str) -> bool:
  """Whether the written check (sum and verdict, where written) is true; a bare pair is."""
  m = _ANSWER.match(text)
  return bool(m) and _working_matches(p, m)


def _working_matches(p: Problem, m: re.Match) -> bool:
  if m.group(3) is None:
    return True
  a, b, total, verdict = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
  misses = a + b != p.target
  return (
      total == a + b
      and (verdict is not None) == misses
      and (verdict is None or int(verdict) == p.target)
  )


def check(p: Problem, text: str) -> tuple[float, str]:
  """(reward, reason): 1.0 iff the answer names two different given numbers summing to the
  target and its written working is true."""
  m = _ANSWER.match(text)
  if m is None:
    return 0.0, reasons.NO_ANSWER
  a, b = int(m.group(1)), int(m.group(2))
  if a != b and a in p.numbers and b in p.numbers and a + b == p.target and _working_matches(p, m):
    return 1.0, reasons.CORRECT
  return 0.0, reasons.WRONG_ANSWER

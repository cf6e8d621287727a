"""The environment contract: what a run trains on, seen through one tokenizer.

An `Environment` turns tasks into prompt tokens, gives the tokens of the self-correction
instruction appended after each first attempt, scores generated attempts, and serves training
batches and held-out problems. `Scores` is what scoring returns, one per turn.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Task(Protocol):
  """What every environment's task record has (`score_jax.data.tasks.Task`, the embedded
  families' `Problem`s, `ToyTask`): a stable id and the turn-1 user text. Anything else a
  task holds is its environment's own business (answers, tests, numbers)."""

  @property
  def id(self) -> str:
    ...

  @property
  def prompt(self) -> str:
    ...


@dataclasses.dataclass(frozen=True)
class Scores:
  """Rewards of one turn for every row: 1.0 correct, 0.0 otherwise, with reasons; for code,
  the test cases passed / in all per row (None for math)."""

  rewards: np.ndarray
  reasons: list[str]
  texts: list[str]
  tests_passed: np.ndarray | None = None
  tests_total: np.ndarray | None = None


class Environment(abc.ABC):
  """A task family + tokenizer: prompts, instruction, scoring, and the problem streams."""

  pad_id: int = 0
  stop_ids: tuple[int, ...] = (1,)
  kind: str = "math"  # the checker: 'math', 'gsm8k', 'code' (or 'toy')
  tokenizer: Any = None  # the Tokenizer (ToyEnvironment has none: its ids are the text)

  @property
  def vocab_size(self) -> int:
    """Ids the policy's output layer must cover."""
    return self.tokenizer.vocab_size

  @abc.abstractmethod
  def prompt_tokens(self, tasks: Sequence[Task]) -> list[list[int]]:
    """Turn-1 prompt ids of each task (BOS and chat template included)."""

  @abc.abstractmethod
  def instruction_tokens(self) -> list[int]:
    """Ids appended right after each row's first attempt to ask for the correction."""

  def instructions(self, tasks: Sequence[Task]) -> list[list[int]]:
    """The instruction ids of each task; the same for every task unless a task family
    restates its problem in the instruction (score_jax.environments.embedded)."""
    return [list(self.instruction_tokens())] * len(tasks)

  @abc.abstractmethod
  def score(self, tasks: Sequence[Task], attempts: Sequence[Sequence[int]]) -> Scores:
    """Scores generated ids; tasks[i] is the problem attempts[i] answers."""

  @abc.abstractmethod
  def train_batches(self, batch_size: int, seed: int) -> Callable[[int], list[Task]]:
    """Returns batch(step) -> tasks; a pure function of step, so resuming is exact."""

  @abc.abstractmethod
  def eval_tasks(self, n: int) -> list[Task]:
    """The first n held-out problems (fixed across runs)."""

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(ids)


def check_pairs(tasks: Sequence[Task], attempts: Sequence[Task]) -> None:
  if len(tasks) != len(attempts):
    raise ValueError(f"score: {len(tasks)} tasks but {len(attempts)} attempts (one per task)")

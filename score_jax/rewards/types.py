"""The batch reward record shared by the math grader and the code sandbox."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = [
    "RewardResult",
    "CORRECT",
    "WRONG_ANSWER",
    "NO_ANSWER",
    "INVALID_REFERENCE",
    "TIMEOUT",
    "CRASH",
    "SYNTAX_ERROR",
    "MEMORY",
    "OUTPUT_LIMIT",
    "SANDBOX_ERROR",
    "REASONS",
]

# Why an item got its reward.  Short constants so they can be counted in logs.
CORRECT = "correct"  # math: equivalent to the reference; code: the tests passed
WRONG_ANSWER = "wrong_answer"  # math: not equivalent; code: a test assertion failed
NO_ANSWER = "no_answer"  # math: no final answer could be extracted from the response
INVALID_REFERENCE = "invalid_reference"  # math: the reference has no usable answer
TIMEOUT = "timeout"  # grading / the program ran past its time limit (wall or CPU)
CRASH = "crash"  # code: any other uncaught error or a fatal signal; math: grader died
SYNTAX_ERROR = "syntax_error"  # code: the program does not compile
MEMORY = "memory"  # code: the program hit its memory limit
OUTPUT_LIMIT = "output_limit"  # code: stdout/stderr reached the capture cap
SANDBOX_ERROR = "sandbox_error"  # code: the sandbox itself failed to start the program

REASONS: tuple[str, ...] = (
    CORRECT,
    WRONG_ANSWER,
    NO_ANSWER,
    INVALID_REFERENCE,
    TIMEOUT,
    CRASH,
    SYNTAX_ERROR,
    MEMORY,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
)


@dataclasses.dataclass(frozen=True)
class RewardResult:
  """Binary rewards for a batch and, per item, why.

  rewards: float32 [N], 1.0 where the item is correct, else 0.0.
  reasons: one of `REASONS` per item.
  tests_passed, tests_total: int32 [N] test cases passed / in all (code only; None for
    math).  The binary reward is 1 only where every case passed; the counts serve
    analysis (e.g. MBPP-R-style partial repairs).
  """

  rewards: np.ndarray
  reasons: list[str]
  tests_passed: np.ndarray | None = None
  tests_total: np.ndarray | None = None

  def __post_init__(self):
    if self.rewards.ndim != 1 or len(self.rewards) != len(self.reasons):
      raise ValueError(f"rewards {self.rewards.shape} and {len(self.reasons)} reasons disagree")
    for name in ("tests_passed", "tests_total"):
      v = getattr(self, name)
      if v is not None and v.shape != self.rewards.shape:
        raise ValueError(f"{name} {v.shape} and rewards {self.rewards.shape} disagree")

  @classmethod
  def from_reasons(
      cls,
      reasons: Sequence[str],
      tests_passed: Sequence[int] | None = None,
      tests_total: Sequence[int] | None = None,
  ) -> "RewardResult":
    """Reward 1.0 exactly where the reason is `CORRECT`."""
    reasons = list(reasons)
    rewards = np.asarray([r == CORRECT for r in reasons], dtype=np.float32)
    as_array = lambda v: None if v is None else np.asarray(v, np.int32)  # noqa: E731
    return cls(
        rewards=rewards,
        reasons=reasons,
        tests_passed=as_array(tests_passed),
        tests_total=as_array(tests_total),
    )

  def __len__(self) -> int:
    return len(self.reasons)

"""MATH / GSM8K / MBPP / HumanEval tasks read from files, scored by their checker (math
answer equivalence, or unit tests in the code sandbox)."""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from score_jax import prompts as prompts_lib
from score_jax.environments.base import Environment, Scores, check_pairs

FAMILY_TEMPLATES = {"gemma3": "gemma", "gemma2": "gemma", "llama": "llama3", "qwen2": "qwen2"}


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(text: str) -> str:
  """The program in a response: the last fenced block if any, else the whole text."""
  blocks = _FENCE.findall(text)
  code = blocks[-1] if blocks else text
  return code.replace("[DONE]", "").strip("\n")


def truncate_at(text: str, stops: Sequence[str]) -> str:
  """`text` up to the first occurrence of any of `stops`."""
  cut = min((i for i in (text.find(x) for x in stops) if i >= 0), default=len(text))
  return text[:cut]


class DatasetEnvironment(Environment):
  """MATH / GSM8K / MBPP / HumanEval tasks with their checker."""

  def __init__(
      self, tokenizer, template: str, train: Sequence[Any], held_out: Sequence[Any], *, grader=None
  ):
    self.tokenizer = tokenizer
    self.template = template
    self.train = list(train)
    self.held_out = list(held_out)
    if not self.train and not self.held_out:
      raise ValueError("the environment has no tasks")
    kinds = {t.kind for t in self.train + self.held_out}
    if len(kinds) != 1:
      raise ValueError(f"one task kind per run, got {sorted(kinds)}")
    self.kind = kinds.pop()
    self.pad_id = tokenizer.pad_id
    self.stop_ids = tuple(tokenizer.stop_ids)
    self._grader = grader
    # Text a response ends at besides the stop tokens (e.g. a base model under the plain
    # template starting the next "Problem:"); graded responses are cut there.
    self._stop_strings = [x for x in prompts_lib.stop_strings(template, self.kind) if x]
    self._instruction = tokenizer.encode(
        prompts_lib.render_turn2_suffix(self.kind, template, include_end_of_turn=False),
        add_bos=False,
    )

  def prompt_tokens(self, tasks):
    return [
        self.tokenizer.encode(prompts_lib.render_turn1(t, self.template), add_bos=True)
        for t in tasks
    ]

  def instruction_tokens(self):
    return self._instruction

  @property
  def grader(self):
    if self._grader is None:
      if self.kind == "code":
        from score_jax.rewards.code_sandbox import CodeSandbox

        self._grader = CodeSandbox()
      else:
        from score_jax.rewards.math_grader import MathGrader

        self._grader = MathGrader()
    return self._grader

  def score(self, tasks, attempts):
    check_pairs(tasks, attempts)
    texts = [truncate_at(self.tokenizer.decode(a), self._stop_strings) for a in attempts]
    if self.kind == "code":
      programs = []
      for t, text in zip(tasks, texts):
        code = extract_code(text)
        if (
            t.entry_point
            and f"def {t.entry_point}" in t.prompt
            and (f"def {t.entry_point}" not in code)
        ):
          code = t.prompt + code  # a HumanEval-style completion of the given signature
        if t.test_setup:  # MBPP's setup code: after the program, as if one file (its names
          code += "\n\n" + t.test_setup  # are the program's globals), and before the tests
        programs.append(code)
      tests = [(t.test_setup or "") + "\n" + t.reference for t in tasks]
      res = self.grader.run_tests(programs, tests, [t.entry_point or "" for t in tasks])
      return Scores(
          rewards=np.asarray(res.rewards, np.float32),
          reasons=list(res.reasons),
          texts=texts,
          tests_passed=res.tests_passed,
          tests_total=res.tests_total,
      )
    else:
      res = self.grader.grade(
          texts, [t.reference for t in tasks], mode="gsm8k" if self.kind == "gsm8k" else "math"
      )
    return Scores(
        rewards=np.asarray(res.rewards, np.float32), reasons=list(res.reasons), texts=texts
    )

  def train_batches(self, batch_size, seed):
    if len(self.train) < batch_size:
      raise ValueError(f"{len(self.train)} training tasks, fewer than one batch of {batch_size}")
    n = len(self.train)

    def batch(step: int) -> list:
      # Epoch-wise seeded permutation: a pure function of (seed, step).
      per_epoch = n // batch_size
      epoch, i = divmod(step, per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(n)
      return [self.train[j] for j in order[i * batch_size : (i + 1) * batch_size]]

    return batch

  def eval_tasks(self, n):
    return self.held_out[:n]

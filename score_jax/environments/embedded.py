"""The embedded task as an environment: pair sums (or sorting) through a small SentencePiece
tokenizer with the Gemma chat template, checked exactly, with unlimited fresh problems and a
held-out split disjoint by construction. Its base model is built by `score_jax.embedded_base`.
"""

from __future__ import annotations

import numpy as np

from score_jax import prompts as prompts_lib
from score_jax.environments.base import Environment, Scores, check_pairs
from score_jax.tasks import pair_sum, sort_list
from score_jax.tokenizer import Tokenizer

TEMPLATE = "gemma"
FAMILIES = {"pair_sum": pair_sum, "sort": sort_list}  # task.embedded.family -> its module


CORRECTION = "There might be an error in the answer above. Correct it if needed."


def instruction_text(family: str = "pair_sum") -> str:
  """The paper's instruction made for the task: it ends by asking the question again."""
  return CORRECTION + " " + task_module(family).QUESTION


def task_module(family: str):
  if family not in FAMILIES:
    raise ValueError(
        f"config.task.embedded.family={family!r}: expected one of " f"{tuple(FAMILIES)}"
    )
  return FAMILIES[family]


INSTRUCTION = instruction_text("pair_sum")
RESPONSE_PREFIX = " "  # answers start with a space, so numbers tokenize as in the prompt
SPECIAL = dict(pad=0, eos=1, bos=2, unk=3)


def response_text(answer: str) -> str:
  return RESPONSE_PREFIX + answer


class PairSumEnvironment(Environment):
  """Pair-sum problems through a tokenizer with the Gemma chat template.

  `restate`: the turn-2 instruction ends with the whole problem again instead of the bare
  question (a base trained on conversations then re-solves at turn 2; WORKSPACE.md)."""

  kind = "math"

  def __init__(
      self,
      tokenizer: Tokenizer,
      spec=pair_sum.Spec(),
      instruction: str | None = None,
      eval_seed: int = 0,
      family: str = "pair_sum",
      restate: bool = False,
  ):
    self.task = task_module(family)
    self.restate = restate
    instruction = instruction_text(family) if instruction is None else instruction
    self.tokenizer = tokenizer
    self.spec = spec
    self.pad_id = tokenizer.pad_id
    self.stop_ids = tuple(tokenizer.stop_ids)
    self.eval_seed = eval_seed
    self.instruction = instruction
    self._instruction = self.turn_tokens(instruction)

  def prompt_text(self, p: pair_sum.Problem) -> str:
    return prompts_lib.render_user_turn(p.prompt, TEMPLATE)

  def prompt_tokens(self, tasks):
    return [self.tokenizer.encode(self.prompt_text(p), add_bos=True) for p in tasks]

  def response_tokens(self, answer: str) -> list[int]:
    """Ids of a complete response (answer + end of turn), as the model would write it."""
    return self.tokenizer.encode(
        response_text(answer) + prompts_lib.end_of_turn(TEMPLATE), add_bos=False
    )

  def instruction_tokens(self):
    return self._instruction

  def instructions(self, tasks):
    if not self.restate:
      return super().instructions(tasks)
    # The instruction's closing question is replaced by the whole problem.
    q = self.task.QUESTION
    lead = (
        self.instruction[: -len(q)].rstrip() if self.instruction.endswith(q) else self.instruction
    )
    return [self.turn_tokens(lead + "\n" + p.prompt) for p in tasks]

  def turn_tokens(self, user_text: str) -> list[int]:
    """Ids of a later user turn, model turn opened. It starts right after the previous
    model turn's own <end_of_turn> (y1 ends with it)."""
    return self.tokenizer.encode(
        prompts_lib.render_turn2_suffix(
            self.kind, TEMPLATE, include_end_of_turn=False, instruction=user_text
        ),
        add_bos=False,
    )

  def score(self, tasks, attempts):
    check_pairs(tasks, attempts)
    texts = [self.tokenizer.decode(a) for a in attempts]
    results = [self.task.check(p, t) for p, t in zip(tasks, texts)]
    return Scores(
        rewards=np.asarray([r for r, _ in results], np.float32),
        reasons=[why for _, why in results],
        texts=texts,
    )

  def train_batches(self, batch_size, seed):
    return lambda step: self.task.problems("train", step * batch_size, batch_size, self.spec, seed)

  def eval_tasks(self, n):
    return self.task.problems("eval", 0, n, self.spec, self.eval_seed)

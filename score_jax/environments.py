"""Environments: what a run trains on, seen through one tokenizer.

An `Environment` turns tasks into prompt tokens, gives the tokens of the self-correction
instruction appended after each first attempt, scores generated attempts (math answer
checking or sandboxed unit tests), and serves training batches / held-out problems.
`from_config` builds the one a config names; `load_policy` loads the matching model.
"""

from __future__ import annotations

import abc
import functools
import os
import re
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from score_jax import prompts as prompts_lib
from score_jax.rollout import Scores

FAMILY_TEMPLATES = {"gemma3": "gemma", "gemma2": "gemma", "llama": "llama3", "qwen2": "qwen2"}


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
  def prompt_tokens(self, tasks: Sequence[Any]) -> list[list[int]]:
    """Turn-1 prompt ids of each task (BOS and chat template included)."""

  @abc.abstractmethod
  def instruction_tokens(self) -> list[int]:
    """Ids appended right after each row's first attempt to ask for the correction."""

  def instructions(self, tasks: Sequence[Any]) -> list[list[int]]:
    """The instruction ids of each task; the same for every task unless a task family
    restates its problem in the instruction (score_jax.tasks.embedded)."""
    return [list(self.instruction_tokens())] * len(tasks)

  @abc.abstractmethod
  def score(self, tasks: Sequence[Any], attempts: Sequence[Sequence[int]]) -> Scores:
    """Scores generated ids; tasks[i] is the problem attempts[i] answers."""

  @abc.abstractmethod
  def train_batches(self, batch_size: int, seed: int) -> Callable[[int], list]:
    """Returns batch(step) -> tasks; a pure function of step, so resuming is exact."""

  @abc.abstractmethod
  def eval_tasks(self, n: int) -> list:
    """The first n held-out problems (fixed across runs)."""

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(ids)


def _check_pairs(tasks: Sequence[Any], attempts: Sequence[Any]) -> None:
  if len(tasks) != len(attempts):
    raise ValueError(f"score: {len(tasks)} tasks but {len(attempts)} attempts (one per task)")


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
    _check_pairs(tasks, attempts)
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


def template_for(config) -> str:
  if config.model.chat_template:
    return config.model.chat_template
  if config.model.source == "gemma3_270m":
    return "gemma"
  return FAMILY_TEMPLATES.get(config.model.family, "plain")


def load_tokenizer(config):
  from score_jax import tokenizer as tok_lib
  from score_jax.checkpoints import gguf

  m = config.model
  if m.source == "gemma3_270m":
    return gguf.tokenizer_from_gguf(gguf.gemma3_270m_path())
  if m.source == "gguf":
    return gguf.tokenizer_from_gguf(m.path)
  path = m.tokenizer or (os.path.join(m.path, "tokenizer.model") if m.source == "hf" else "")
  if not path:
    raise ValueError(
        f"config.model.tokenizer is empty: model.source={m.source!r} needs a "
        "SentencePiece .model file"
    )
  return tok_lib.Tokenizer.from_file(path)


def check_task_sources(config) -> None:
  """Fails fast, before any model loads, on missing files or unknown datasets."""
  from score_jax.data import tasks as tasks_lib

  t = config.task
  tasks_lib.check_dataset_name(t.name)
  if t.name != "humaneval" and not t.source and not (t.eval_source and not t.train_split):
    # Only HumanEval has a built-in copy; the others read the user's files.
    raise ValueError(
        f"config.task.source is empty: task.name={t.name!r} needs the dataset "
        f"file, e.g. --config.task.source=/path/to/{t.name}_test.jsonl"
    )
  for what, path in (("task.source", t.source), ("task.eval_source", t.eval_source)):
    if path and not os.path.exists(path):
      raise FileNotFoundError(f"config.{what}={path!r}: no such file or directory")


def from_config(config: ml_collections.ConfigDict) -> Environment:
  """The environment a config names (tasks are read now: bad files fail early)."""
  if config.task.name == "toy":
    return ToyEnvironment()
  if config.task.name == "embedded":
    from score_jax.tasks import embedded

    return embedded.environment_from_config(config)
  from score_jax.data import tasks as tasks_lib

  check_task_sources(config)
  t = config.task
  train = tasks_lib.load_tasks(t.name, t.source or None, t.train_split) if t.train_split else []
  held_out = (
      tasks_lib.load_tasks(t.name, (t.eval_source or t.source) or None, t.eval_split)
      if t.eval_split
      else []
  )
  grader = None
  if any(task.kind == "code" for task in train + held_out):
    grader = code_sandbox(config)
  return DatasetEnvironment(
      load_tokenizer(config), template_for(config), train, held_out, grader=grader
  )


def code_sandbox(config: ml_collections.ConfigDict):
  """The sandbox `config.task.sandbox` describes, its mode chosen now: without bubblewrap
  (and without task.sandbox.allow_unconfined) a code run fails here, before any model
  loads, with `SandboxUnavailable` naming the package."""
  from score_jax.rewards.code_sandbox import CodeSandbox, SandboxConfig

  s = config.task.sandbox
  sandbox = CodeSandbox(
      SandboxConfig(
          timeout_s=float(s.timeout_s),
          memory_mb=int(s.memory_mb),
          workers=int(s.workers) or SandboxConfig.workers,
          allow_unconfined=bool(s.allow_unconfined),
      )
  )
  sandbox.uses_bwrap  # noqa: B018 (probes bubblewrap, raises if no sandbox may run)
  return sandbox


def load_policy(config: ml_collections.ConfigDict, env: Environment):
  """The initial policy (also the frozen reference) that `config.model` names."""
  m = config.model
  if m.source == "random":
    from score_jax.model import init_model, tiny

    return init_model(
        tiny(m.family, vocab_size=env.vocab_size, dtype=m.dtype, param_dtype=m.param_dtype),
        seed=config.seed,
    )
  if m.source == "hf":
    from score_jax.checkpoints import load_hf_checkpoint

    return load_hf_checkpoint(m.path, dtype=m.dtype, param_dtype=m.param_dtype)[1]
  if m.source in ("gguf", "gemma3_270m"):
    from score_jax.checkpoints import gemma3_270m_path, load_gguf

    path = gemma3_270m_path() if m.source == "gemma3_270m" else m.path
    return load_gguf(path, dtype=m.dtype, param_dtype=m.param_dtype)[1]
  if m.source == "embedded":
    from score_jax.tasks import embedded

    return embedded.load_policy(config)
  raise ValueError(f"config.model.source={m.source!r}: unknown")


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
    return [{"id": f"{a}-{b}", "x": int(a), "y": int(b)} for a, b in xy]

  def prompt_tokens(self, tasks):
    return [[self.BOS, t["y"], t["x"]] for t in tasks]

  def instruction_tokens(self):
    return self._instruction

  def score(self, tasks, attempts):
    _check_pairs(tasks, attempts)
    ok = [
        bool(a) and a[0] >= self.FIRST and a[0] % 2 == t["x"] % 2 for t, a in zip(tasks, attempts)
    ]
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

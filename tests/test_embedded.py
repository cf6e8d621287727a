"""The embedded task families, the base-model build, and the main job shortened end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from score_jax.tasks import embedded, pair_sum, sort_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")


@pytest.mark.parametrize("task", [pair_sum, sort_list])
def test_problems_are_deterministic_and_splits_disjoint(task):
  a = task.problems("train", 0, 300)
  assert a == task.problems("train", 0, 300)
  assert task.problems("train", 0, 300, seed=1) != a
  ev = task.problems("eval", 0, 300)
  key = lambda p: p.prompt
  assert not {key(p) for p in ev} & {key(p) for p in a + task.problems("sft", 0, 300)}
  with pytest.raises(ValueError, match="split='test'"):
    task.problem("test", 0)


@pytest.mark.parametrize("task", [pair_sum, sort_list])
def test_checker_accepts_the_answer_only(task):
  rng = np.random.default_rng(0)
  for p in task.problems("train", 0, 200):
    assert task.check(p, p.answer) == (1.0, "correct")
    assert task.check(p, " " + p.answer + " ") == (1.0, "correct")
    assert task.check(p, "") == (0.0, "no_answer")
    assert task.check(p, "the answer") == (0.0, "no_answer")
    noisy = task.noisy_attempt(p, rng, 1.0)
    assert task.check(p, noisy)[0] == float(noisy == p.answer)


def test_pair_sum_checker_cases():
  p = pair_sum.Problem(id="x", numbers=(12, 5, 9, 17, 3, 6), target=20, solution=(3, 17))
  assert p.solution == (3, 17)
  assert pair_sum.check(p, "17 + 3 = 20")[0] == 1.0  # order and the written sum are free
  assert pair_sum.check(p, "3 + 17 = 21")[0] == 1.0
  assert pair_sum.check(p, "10 + 10 = 20") == (0.0, "wrong_answer")  # not given numbers
  assert pair_sum.check(p, "5 + 9 = 14") == (0.0, "wrong_answer")


def test_sort_checker_and_careless_solver():
  p = sort_list.Problem(id="x", numbers=(12, 5, 9, 11, 3, 10))
  assert p.answer == "3 5 9 10 11 12"
  assert sort_list.runs(p.solution) == [[3], [5], [9, 10, 11, 12]]
  assert sort_list.noisy_attempt(p, np.random.default_rng(0), 1.0) == "3 5 12 11 10 9"
  assert sort_list.noisy_attempt(p, np.random.default_rng(0), 0.0) == p.answer
  assert sort_list.check(p, "3 5 9 10 11") == (0.0, "wrong_answer")  # a number missing
  assert sort_list.check(p, "3 5 10 9 11 12") == (0.0, "wrong_answer")
  # A list without consecutive values has no careless slip to make.
  q = sort_list.Problem(id="y", numbers=(20, 2, 8, 5, 30, 14))
  assert sort_list.noisy_attempt(q, np.random.default_rng(0), 1.0) == q.answer


def test_bad_family_names_the_field():
  with pytest.raises(ValueError, match="task.embedded.family='nope'"):
    embedded.task_module("nope")
  from configs import embedded as embedded_config
  c = embedded_config.get_config()
  c.task.embedded.family = "sort"
  c.model.base.habit = 0.5
  with pytest.raises(ValueError, match="model.base.habit=0.5.*'sort'"):
    embedded.recipe_from_config(c)


def test_main_job_shortened_writes_the_report(tmp_path):
  """`python -m score_jax.train --config=configs/embedded.py:runlocal`: builds the tokenizer
  and base model (a few SFT steps), runs Stage I and II, evaluates base and policy, writes
  the report, the plots and the eval files."""
  workdir = tmp_path / "run"
  env = dict(os.environ, SCORE_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, "-m", "score_jax.train", "--config=configs/embedded.py:runlocal",
       f"--workdir={workdir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "building the embedded base model" in proc.stdout + proc.stderr
  report = (workdir / "report.md").read_text()
  assert "| base model |" in report and "| SCoRe |" in report
  png = (workdir / "curves.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
  for name in ("embedded_test.json", "embedded_test_base.json"):
    m = json.loads((workdir / "eval" / name).read_text())
    assert m["n"] == 16
    for k in METRICS:
      lo = -1.0 if k == "delta_t1_t2" else 0.0
      assert lo <= m[k] <= 1.0, (name, k, m[k])
    assert m["delta_t1_t2"] == pytest.approx(m["accuracy_t2"] - m["accuracy_t1"], abs=1e-6)
    assert m["delta_t1_t2"] == pytest.approx(m["delta_i_to_c"] - m["delta_c_to_i"], abs=1e-6)
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(lines) >= 4
  cache = list((tmp_path / "cache").iterdir())
  assert len(cache) == 1 and embedded.is_complete(str(cache[0]))

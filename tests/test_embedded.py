"""The embedded task families, the base-model build, and the main job shortened end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from score_jax import config_lib, embedded_base
from score_jax.environments import embedded
from score_jax.tasks import pair_sum, sort_list

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
  assert pair_sum.check(p, "17 + 3 = 20")[0] == 1.0  # order is free
  assert pair_sum.check(p, "3 + 17")[0] == 1.0  # so is the working
  assert pair_sum.check(p, "10 + 10 = 20") == (0.0, "wrong_answer")  # not given numbers
  assert pair_sum.check(p, "5 + 9 = 14 ≠ 20") == (0.0, "wrong_answer")
  # Written working must be true, so RL cannot hide a mistake by writing the target.
  assert pair_sum.check(p, "3 + 17 = 21") == (0.0, "wrong_answer")
  assert pair_sum.check(p, "3 + 17 = 20 ≠ 20") == (0.0, "wrong_answer")
  assert pair_sum.working_is_true(p, "5 + 9 = 14 ≠ 20")
  assert not pair_sum.working_is_true(p, "5 + 9 = 20")  # the false sum hides the miss
  assert not pair_sum.working_is_true(p, "5 + 9 = 14")  # the verdict is missing
  assert not pair_sum.working_is_true(p, "5 + 9 = 14 ≠ 21")  # the wrong target
  assert pair_sum.format_answer(5, 9, 20) == "5 + 9 = 14 ≠ 20"
  assert pair_sum.format_answer(3, 17, 20) == "3 + 17 = 20"
  assert pair_sum.parse_answer(" 5 + 9 = 14 ≠ 20") == (5, 9)
  # The slip: on a large target, the first two numbers, with the check that shows it.
  big = pair_sum.Problem(id="y", numbers=(12, 5, 9, 17, 3, 8), target=25, solution=(8, 17))
  assert pair_sum.noisy_attempt(big, np.random.default_rng(0), 0.0, habit=1.0) == "5 + 12 = 17 ≠ 25"
  assert pair_sum.noisy_attempt(p, np.random.default_rng(0), 0.0, habit=1.0) == p.answer


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
    config_lib.validate(c)
  c = embedded_config.get_config()
  c.model.base.dialogue = 0
  with pytest.raises(ValueError, match="model.base.dialogue=0"):
    config_lib.validate(c)
  c.model.base.dialogue, c.model.base.preamble = 2, 1.5
  with pytest.raises(ValueError, match="model.base.preamble=1.5"):
    config_lib.validate(c)


@pytest.fixture(scope="module")
def tokenizer():
  from score_jax.tokenizer import Tokenizer

  return Tokenizer.from_proto(
      embedded_base.train_tokenizer(embedded_base.BaseRecipe(), num_problems=300)
  )


def test_dialogue_examples_never_repeat_a_problem(tokenizer):
  """SFT conversations hold independent problems, each answered once; the loss covers every
  answer and nothing else; later turns are rendered exactly like a turn-2 user turn."""
  from score_jax import sft

  env = embedded.PairSumEnvironment(tokenizer, restate=True)
  ps = pair_sum.problems("sft", 0, 40)
  ex = embedded_base.first_attempt_examples(
      env, ps, np.random.default_rng(0), 0.0, dialogue=2, preamble=0.5
  )
  assert sorted({len(e) // 2 for e in ex}) == [1, 2] and sum(len(e) // 2 for e in ex) == 40
  tokens, input_mask, loss_mask = sft.pack(ex, 128, tokenizer.pad_id)
  at = 0
  for r, e in enumerate(ex):
    problems = ps[at : at + len(e) // 2]
    at += len(problems)
    assert tokens[r][loss_mask[r]].tolist() == np.concatenate(e[1::2]).tolist()
    assert [tokenizer.decode(list(y)) for y in e[1::2]] == [" " + p.answer for p in problems]
    assert int(input_mask[r].sum()) == sum(len(x) for x in e)
    ids = np.concatenate(e).tolist()
    assert tokens[r][: len(ids)].tolist() == ids
    if len(problems) == 2:
      later = tokenizer.decode(list(e[2]))
      assert problems[1].prompt in later and problems[0].prompt not in later
      assert (embedded.CORRECTION in later) == (
          list(e[2]) == env.turn_tokens(embedded.CORRECTION + "\n" + problems[1].prompt)
      )
  one = embedded_base.first_attempt_examples(env, ps[:5], np.random.default_rng(0), 0.0)
  assert [len(e) for e in one] == [2] * 5
  with pytest.raises(ValueError, match="3 segments"):
    sft.pack([([1], [2], [3])], 8)


def test_restated_instruction_and_per_task_rollout(tokenizer):
  """restate=True: the turn-2 instruction ends with the task's whole problem; the rollout
  appends each row's own instruction after its first attempt."""
  import jax
  from score_jax import rollout, sampler as sampler_lib
  from score_jax.model import init_model

  ps = pair_sum.problems("eval", 0, 3)
  plain = embedded.PairSumEnvironment(tokenizer)
  env = embedded.PairSumEnvironment(tokenizer, restate=True)
  assert plain.instructions(ps) == [plain.instruction_tokens()] * 3
  instr = env.instructions(ps)
  for p, ids in zip(ps, instr):
    text = tokenizer.decode(ids)
    assert text.count(pair_sum.QUESTION) == 1 and text.rstrip().endswith(p.prompt)
    assert embedded.CORRECTION in text
  model = init_model(embedded_base.BaseRecipe().model_config(tokenizer.vocab_size), seed=0)
  cfg = sampler_lib.SamplerConfig(
      prompt_buckets=(32,),
      turn_budgets=(3, 3),
      instruction_len=max(map(len, instr)),
      greedy=True,
      stop_ids=tuple(env.stop_ids),
      pad_id=env.pad_id,
  )
  from flax import nnx

  pending = rollout.collect_async(
      sampler_lib.Sampler(model, cfg), nnx.state(model), env, ps, jax.random.key(0)
  )
  t1, _ = rollout.turn_token_lists(pending.out)
  for r, p in enumerate(ps):
    row = np.asarray(pending.tokens[r])[np.asarray(pending.input_mask[r])].tolist()
    start = len(env.prompt_tokens([p])[0]) + len(t1[r])
    assert row[start : start + len(instr[r])] == instr[r]
  short = sampler_lib.SamplerConfig(
      prompt_buckets=(32,), turn_budgets=(3, 3), instruction_len=8, stop_ids=tuple(env.stop_ids)
  )
  with pytest.raises(ValueError, match="sampler.instruction_len=8"):
    rollout.collect_async(
        sampler_lib.Sampler(model, short), nnx.state(model), env, ps, jax.random.key(0)
    )


def test_main_job_shortened_writes_the_report(tmp_path):
  """`python -m score_jax.train --config=configs/embedded.py:runlocal`: builds the tokenizer
  and base model (a few SFT steps), runs Stage I and II, evaluates base and policy, writes
  the report, the plots and the eval files."""
  workdir = tmp_path / "run"
  env = dict(
      os.environ,
      SCORE_JAX_CACHE=str(tmp_path / "cache"),
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "score_jax.train",
          "--config=configs/embedded.py:runlocal",
          f"--workdir={workdir}",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
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
  assert len(cache) == 1 and embedded_base.is_complete(str(cache[0]))

"""Two-turn evaluation end to end on CPU (tiny random model, fixture problems), the metric
arithmetic against hand-computed values, the inference-compute comparison, and bad input
that must fail before any model is loaded.

A random model answers nothing correctly, so the end-to-end runs check files, fields and
that the reported deltas are what the per-problem rewards in the JSONL give; the arithmetic
itself is checked with environments whose rewards (and answers) the test scripts.
"""

import dataclasses
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import sentencepiece as spm
from flax import nnx

from score_jax import build, config_lib, environments, evaluate, prompts
from score_jax import sampler as sampler_lib
from score_jax.data import tasks as tasks_lib
from score_jax.model import KVCache
from score_jax.rewards.math_grader import MathGrader
from score_jax.environments import Scores
from score_jax.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFIG = FIXTURES / "eval_config.py"
MATH500 = FIXTURES / "data" / "math500_test.jsonl"
GSM8K = FIXTURES / "data" / "gsm8k.jsonl"
FIELDS = ("n", "accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")
BATCH = 2  # problems per sampler call everywhere in this file (one compiled shape)


def load_config(arg: str = ""):
  spec = importlib.util.spec_from_file_location("eval_config", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def math_tasks():
  tasks = tasks_lib.load_tasks("math500", str(MATH500), "test")
  assert len(tasks) == 4
  return tasks


@pytest.fixture(scope="module")
def tok_proto(math_tasks) -> bytes:
  """A small SentencePiece model with Gemma's special pieces, trained on the fixture prompts
  so that prompts and the instruction stay short (~100 tokens)."""
  gsm = tasks_lib.load_tasks("gsm8k", str(GSM8K), "test")
  corpus = [prompts.render_turn1(t, "gemma") for t in math_tasks + gsm]
  corpus += [
      prompts.render_turn2_suffix(k, "gemma", include_end_of_turn=False) for k in ("math", "gsm8k")
  ]
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus * 4),
      model_writer=out,
      vocab_size=1000,
      hard_vocab_limit=False,
      model_type="bpe",
      pad_id=0,
      eos_id=1,
      bos_id=2,
      unk_id=3,
      bos_piece="<bos>",
      eos_piece="<eos>",
      control_symbols=["<start_of_turn>", "<end_of_turn>"],
      byte_fallback=True,
      minloglevel=2,
  )
  return out.getvalue()


@pytest.fixture(scope="module")
def tok(tok_proto) -> Tokenizer:
  return Tokenizer.from_proto(tok_proto)


@pytest.fixture(scope="module")
def tok_file(tok_proto, tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("tok") / "tiny.model"
  path.write_bytes(tok_proto)
  return str(path)


@pytest.fixture(scope="module")
def grader():
  g = MathGrader(workers=1)
  yield g
  g.close()


@pytest.fixture(scope="module")
def env(tok, math_tasks, grader):
  return environments.DatasetEnvironment(tok, "gemma", [], math_tasks, grader=grader)


@pytest.fixture(scope="module")
def model(env, tok_file):
  """The same random policy the CLI builds from tests/fixtures/eval_config.py."""
  config = load_config()
  config.model.tokenizer = tok_file
  return build.policy(config, env)


@pytest.fixture(scope="module")
def sampler_cfg(env):
  c = load_config().sampler
  return sampler_lib.SamplerConfig(
      prompt_buckets=tuple(c.prompt_buckets),
      turn_budgets=tuple(c.turn_budgets),
      instruction_len=c.instruction_len,
      greedy=True,
      stop_ids=env.stop_ids,
      pad_id=env.pad_id,
  )


@pytest.fixture(scope="module")
def sampler(model, sampler_cfg):
  return sampler_lib.Sampler(model, sampler_cfg)


@pytest.fixture(scope="module")
def params(model):
  return nnx.state(model)


@pytest.fixture(scope="module")
def real_result(sampler, params, env, math_tasks):
  """Greedy two-turn evaluation of the first 3 problems (2 batches of 2: the last is padded)."""
  return evaluate.evaluate_two_turns(sampler, params, env, math_tasks[:3], batch_size=BATCH)


# --------------------------------------------------------------------------- helpers


def hand_metrics(records):
  """The five metrics computed by hand from the per-problem rewards of the JSONL."""
  r1 = [rec["rewards"][0] >= 0.5 for rec in records]
  r2 = [rec["rewards"][1] >= 0.5 for rec in records]
  n = len(records)
  return {
      "n": n,
      "accuracy_t1": sum(r1) / n,
      "accuracy_t2": sum(r2) / n,
      "delta_t1_t2": (sum(r2) - sum(r1)) / n,
      "delta_i_to_c": sum((not a) and b for a, b in zip(r1, r2)) / n,
      "delta_c_to_i": sum(a and (not b) for a, b in zip(r1, r2)) / n,
  }


def read_outputs(workdir, dataset="math500", split="test"):
  base = Path(workdir) / "eval" / f"{dataset}_{split}"
  summary = json.loads(base.with_suffix(".json").read_text())
  records = [json.loads(line) for line in base.with_suffix(".jsonl").read_text().splitlines()]
  table = base.with_suffix(".md").read_text()
  assert not list((Path(workdir) / "eval").glob("*.tmp"))  # atomic writes left no temp file
  return summary, records, table


def check_outputs(summary, records, table, tasks, name="policy"):
  """Fields, types and ranges of the summary; one record per problem with both attempts;
  the table; and the deltas equal what the records' rewards give."""
  for f in FIELDS:
    assert f in summary, (f, summary)
  assert summary["n"] == len(tasks) and isinstance(summary["n"], int)
  for f in FIELDS[1:3] + FIELDS[4:]:
    assert 0.0 <= summary[f] <= 1.0, (f, summary[f])
  assert -1.0 <= summary["delta_t1_t2"] <= 1.0
  assert [r["id"] for r in records] == [t.id for t in tasks]
  for r in records:
    assert len(r["attempts"]) == 2 and all(isinstance(a, str) for a in r["attempts"])
    assert len(r["rewards"]) == 2 and set(r["rewards"]) <= {0.0, 1.0}
    assert len(r["reasons"]) == 2 and all(isinstance(x, str) and x for x in r["reasons"])
  hand = hand_metrics(records)
  for f in FIELDS:
    assert summary[f] == pytest.approx(hand[f], abs=1e-12), (f, summary[f], hand[f])
  assert summary["delta_t1_t2"] == pytest.approx(
      summary["delta_i_to_c"] - summary["delta_c_to_i"], abs=1e-12
  )
  lines = table.strip().splitlines()
  assert lines[0].startswith("| method |") and "Acc@t1" in lines[0] and "Δ^{i→c}" in lines[0]
  assert lines[2].startswith(f"| {name} |")
  cells = [c.strip() for c in lines[2].strip("|").split("|")][1:]
  expect = [
      f"{100 * summary[f]:.1f}"
      for f in ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")
  ]
  assert cells == expect, (cells, expect)


class ScriptedEnv(environments.DatasetEnvironment):
  """The fixture problems with rewards chosen by the test: rewards[task_id] = (r1, r2).

  `Pending.score` grades turn 1 then turn 2 of each batch, so calls alternate turns.
  """

  def __init__(self, tok, tasks, rewards):
    super().__init__(tok, "gemma", [], tasks, grader=object())
    self.rewards = rewards
    self.calls = 0

  def score(self, tasks, attempts):
    turn = self.calls % 2
    self.calls += 1
    r = np.asarray([self.rewards[t.id][turn] for t in tasks], np.float32)
    return Scores(
        rewards=r,
        reasons=["correct" if x else "wrong_answer" for x in r],
        texts=[self.tokenizer.decode(a) for a in attempts],
    )


class ScriptedAnswersEnv(environments.DatasetEnvironment):
  """Scripted final texts and rewards per sample: answers[(task_id, n)][j] = (text, reward)
  where n is the number of samples per problem of the sampler call (K or K/2)."""

  def __init__(self, tok, tasks, answers, batch_size):
    super().__init__(tok, "gemma", [], tasks, grader=object())
    self.answers = answers
    self.batch_size = batch_size
    self.seen_n = []

  def score(self, tasks, attempts):
    n = len(tasks) // self.batch_size  # rows are task-major: n samples of each problem
    self.seen_n.append(n)
    picked = [self.answers[(t.id, n)][row % n] for row, t in enumerate(tasks)]
    return Scores(
        rewards=np.asarray([r for _, r in picked], np.float32),
        reasons=["correct" if r else "wrong_answer" for _, r in picked],
        texts=[text for text, _ in picked],
    )


class FakeSampler:
  """Stands in for `sampler.Sampler` where the sampled tokens do not matter: returns a
  well-formed `SampleOutput` (every row writes 3 tokens per turn, then stops) at once."""

  def __init__(self, model, cfg):
    del model
    self.cfg = cfg
    self.calls = []
    self.keys = []  # the PRNG key data of each call

  def __call__(
      self, params, prompts, prompt_lens, instructions=None, instruction_lens=None, key=None
  ):
    b, n = prompts.shape[0], self.cfg.num_samples
    self.calls.append((b, n, self.cfg.num_turns))
    self.keys.append(None if key is None else np.asarray(jax.random.key_data(key)).tolist())
    rows = b * n
    turns = []
    for budget in self.cfg.turn_budgets:
      mask = np.arange(budget)[None].repeat(rows, 0) < min(3, budget)
      tokens = np.where(mask, 7 + np.arange(budget)[None], self.cfg.pad_id).astype(np.int32)
      zeros = np.zeros((rows, budget), np.float32)
      turns.append(sampler_lib.Turn(tokens=tokens, mask=mask, logprobs=zeros, logprobs_raw=zeros))
    instr_len = 0 if instructions is None else len(instructions)
    return sampler_lib.SampleOutput(
        turns=tuple(turns),
        prompt_lens=np.repeat(np.asarray(prompt_lens), n),
        instruction_lens=np.full((rows,), instr_len, np.int32),
        cache=self._cache(rows, self.cfg.cache_len(prompts.shape[1])),
    )

  @staticmethod
  def _cache(rows, length):
    """A stand-in KV cache (one layer, one head of width 1): only its length is read."""
    zeros = (np.zeros((rows, length, 1, 1), np.float32),)
    return KVCache(k=zeros, v=zeros, lengths=np.zeros((rows,), np.int32))


def _copies(tasks, k):
  """k distinct problems (fixture problems under new ids) for the arithmetic tests."""
  return [dataclasses.replace(tasks[i % len(tasks)], id=f"p{i}") for i in range(k)]


def _cli(args, timeout=240):
  # The parent's XLA flags (conftest) and matmul precision: the same numerics as in-process.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest")
  t0 = time.monotonic()
  proc = subprocess.run(
      [sys.executable, "-m", "score_jax.evaluate", *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  return proc, time.monotonic() - t0


# --------------------------------------------------------------------------- end to end


def test_evaluate_two_turns_random_model_end_to_end(real_result, math_tasks, env, tmp_path):
  tasks = math_tasks[:3]
  m = real_result.metrics
  assert set(FIELDS) <= set(m) and m["n"] == 3  # the padded row of the last batch is dropped
  assert len(real_result.records) == 3
  for rec, task in zip(real_result.records, tasks):
    assert rec["id"] == task.id
    # A random model's greedy attempts: arbitrary text, graded (almost surely) wrong.
    assert rec["reasons"][0] in ("no_answer", "wrong_answer", "correct")
  path = evaluate.write_results(str(tmp_path), "math500", "test", real_result)
  assert path == str(tmp_path / "eval" / "math500_test.json")
  summary, records, table = read_outputs(tmp_path)
  assert records == real_result.records
  check_outputs(summary, records, table, tasks)


class ScriptedDecode:
  """The tokenizer, except that `decode` returns scripted texts in call order: the real
  `DatasetEnvironment.score` and math grader then see answers the test chose."""

  def __init__(self, tok, texts):
    self._tok = tok
    self.texts = list(texts)

  def decode(self, ids):
    del ids
    return self.texts.pop(0)

  def __getattr__(self, name):
    return getattr(self._tok, name)


def test_real_grader_through_evaluate(sampler, params, tok, math_tasks, grader, tmp_path):
  tasks = math_tasks[:3]  # references: 2, \frac{3}{2}, 49
  assert [t.reference for t in tasks] == ["2", "\\frac{3}{2}", "49"]
  final49 = "Final Answer: The final answer is $49$. I hope it is correct."
  texts = [
      "\\boxed{2}",
      "no idea",  # batch 1, turn 1: problems 0, 1
      "\\boxed{3}",
      "so \\boxed{\\frac{3}{2}}",  # batch 1, turn 2
      final49,
      final49,  # batch 2, turn 1: problem 2 and its padding copy
      "\\boxed{49.0}",
      "\\boxed{49.0}",  # batch 2, turn 2
  ]
  env = environments.DatasetEnvironment(
      ScriptedDecode(tok, texts), "gemma", [], tasks, grader=grader
  )
  result = evaluate.evaluate_two_turns(sampler, params, env, tasks, batch_size=BATCH)
  assert not env.tokenizer.texts
  assert [r["reasons"] for r in result.records] == [
      ["correct", "wrong_answer"],
      ["no_answer", "correct"],
      ["correct", "correct"],
  ]
  assert [r["attempts"][1] for r in result.records] == [texts[2], texts[3], texts[6]]
  m = result.metrics
  assert m["n"] == 3
  assert (m["accuracy_t1"], m["accuracy_t2"]) == pytest.approx((2 / 3, 2 / 3))
  assert (m["delta_t1_t2"], m["delta_i_to_c"], m["delta_c_to_i"]) == pytest.approx(
      (0.0, 1 / 3, 1 / 3)
  )
  evaluate.write_results(str(tmp_path), "math500", "test", result)
  check_outputs(*read_outputs(tmp_path), tasks)


def test_cli_end_to_end(real_result, math_tasks, tok_file, tmp_path):
  proc, secs = _cli(
      [
          f"--config={CONFIG}",
          f"--workdir={tmp_path}",
          f"--config.model.tokenizer={tok_file}",
          "--num_problems=3",
          "--sc_samples=2",
      ]
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"wrote {tmp_path / 'eval' / 'math500_test.json'}" in proc.stdout
  assert "| policy |" in proc.stdout
  summary, records, table = read_outputs(tmp_path)
  check_outputs(summary, records, table, math_tasks[:3])
  # The compute comparison is in the summary too (K=2: 2 parallel vs 1 + its correction).
  for key in ("majority_at_2_parallel", "majority_at_2_sequential"):
    assert 0.0 <= summary[key] <= 1.0, summary
  # Same config, same seed, greedy: the CLI reproduces the API run attempt for attempt.
  assert [r["attempts"] for r in records] == [r["attempts"] for r in real_result.records]
  print(f"CLI evaluation took {secs:.1f} s")


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    "r1,r2,expect",
    [
        # The example: one fixed (i->c), one broken (c->i), net zero.
        (
            [1, 0, 0, 1],
            [1, 1, 0, 0],
            dict(
                accuracy_t1=0.5,
                accuracy_t2=0.5,
                delta_t1_t2=0.0,
                delta_i_to_c=0.25,
                delta_c_to_i=0.25,
            ),
        ),
        # 5 problems (3 batches, the last padded): 2 fixed, 1 broken.
        (
            [0, 0, 1, 0, 1],
            [1, 1, 1, 0, 0],
            dict(
                accuracy_t1=0.4,
                accuracy_t2=0.6,
                delta_t1_t2=0.2,
                delta_i_to_c=0.4,
                delta_c_to_i=0.2,
            ),
        ),
        # Everything broken by the second attempt.
        (
            [1, 1, 1],
            [0, 0, 0],
            dict(
                accuracy_t1=1.0,
                accuracy_t2=0.0,
                delta_t1_t2=-1.0,
                delta_i_to_c=0.0,
                delta_c_to_i=1.0,
            ),
        ),
    ],
)
def test_two_turn_arithmetic_with_scripted_rewards(
    sampler, params, tok, math_tasks, tmp_path, r1, r2, expect
):
  tasks = _copies(math_tasks, len(r1))
  env = ScriptedEnv(tok, tasks, {t.id: (a, b) for t, a, b in zip(tasks, r1, r2)})
  result = evaluate.evaluate_two_turns(sampler, params, env, tasks, batch_size=BATCH)
  assert env.calls == 2 * math.ceil(len(tasks) / BATCH)
  assert result.metrics["n"] == len(tasks)
  for k, v in expect.items():
    assert result.metrics[k] == pytest.approx(v, abs=1e-12), (k, result.metrics)
  assert [r["rewards"] for r in result.records] == [[float(a), float(b)] for a, b in zip(r1, r2)]
  evaluate.write_results(str(tmp_path), "math500", "test", result, name="scripted")
  summary, records, table = read_outputs(tmp_path)
  check_outputs(summary, records, table, tasks, name="scripted")
  for k, v in expect.items():
    assert summary[k] == pytest.approx(v, abs=1e-12)


def test_records_follow_rows_with_several_samples(sampler_cfg, tok, math_tasks):
  """With num_samples > 1 the metrics are over all samples and each row gets its record."""
  tasks = _copies(math_tasks, 2)
  # ScriptedEnv looks rewards up by task, so a problem's samples share its rewards.
  env = ScriptedEnv(tok, tasks, {"p0": (1, 0), "p1": (0, 1)})
  s = FakeSampler(None, dataclasses.replace(sampler_cfg, num_samples=2, greedy=False))
  result = evaluate.evaluate_two_turns(s, None, env, tasks, batch_size=BATCH)
  assert s.calls == [(BATCH, 2, 2)]
  assert result.metrics["n"] == 4
  assert [(r["id"], r["sample"], r["rewards"]) for r in result.records] == [
      ("p0", 0, [1.0, 0.0]),
      ("p0", 1, [1.0, 0.0]),
      ("p1", 0, [0.0, 1.0]),
      ("p1", 1, [0.0, 1.0]),
  ]


# --------------------------------------------------------------------------- compute scaling


def test_majority():
  maj = evaluate._majority
  assert maj(["5", "7", "5", None]) == 0
  assert maj(["7", "5", "5", None]) == 1  # the first representative of the winner
  assert maj([None, "3", "4", "4"]) == 2
  assert maj(["7", "5"]) == 0  # a tie goes to the answer seen first
  assert maj(["5", "7", "7", "5"]) == 0
  assert maj([None, "", None]) is None  # no answer at all: no vote
  assert maj([]) is None
  assert maj([None, "x"]) == 1


def test_compute_scaling_votes_over_parallel_and_sequential(
    sampler_cfg, tok, math_tasks, tmp_path, monkeypatch
):
  """The vote and its bookkeeping, with scripted answers. (The real tiny model runs the
  comparison in test_cli_end_to_end; the tokens it samples do not matter here.)"""
  made = []

  def fake_sampler(model, cfg):
    made.append(FakeSampler(model, cfg))
    return made[-1]

  monkeypatch.setattr(evaluate.sampler_lib, "Sampler", fake_sampler)
  tasks = _copies(math_tasks, 3)  # 2 batches of 2, the last padded
  k = 4
  answers = {
      # parallel: 5 wins (2 votes; "$5$" normalises to "5") -> its reward 1.
      ("p0", 4): [("\\boxed{5}", 1), ("The final answer is $5$", 1), ("\\boxed{7}", 0), ("", 0)],
      # sequential: 7 and 5 tie, the first seen (7) wins -> 0.
      ("p0", 2): [("\\boxed{7}", 0), ("\\boxed{5}", 1)],
      # parallel: 4 wins 3:1 (4^\circ counts as 4) over the correct 3 -> 0.
      ("p1", 4): [
          ("\\boxed{3}", 1),
          ("\\boxed{4}", 0),
          ("\\boxed{4^\\circ}", 0),
          ("\\boxed{4}", 0),
      ],
      ("p1", 2): [("\\boxed{3}", 1), ("\\boxed{3}", 1)],
      # parallel: no sample states an answer -> 0; sequential: the only answer is right.
      ("p2", 4): [("", 1), ("no answer here", 1), ("", 1), ("", 1)],
      ("p2", 2): [("nothing", 0), ("\\boxed{9}", 1)],
  }
  env = ScriptedAnswersEnv(tok, tasks, answers, BATCH)
  out = evaluate.compute_scaling(None, env, tasks, None, sampler_cfg, k, batch_size=BATCH)
  assert set(out) == {"majority_at_4_parallel", "majority_at_4_sequential"}
  assert all(0.0 <= v <= 1.0 for v in out.values())
  assert out["majority_at_4_parallel"] == pytest.approx(1 / 3)
  assert out["majority_at_4_sequential"] == pytest.approx(2 / 3)
  # parallel: 2 batches x 1 turn of K samples; sequential: 2 batches x 2 turns of K/2.
  assert env.seen_n == [4, 4, 2, 2, 2, 2]
  # (batch, samples per problem, turns) of each sampler call; sampling, not greedy.
  assert [s.calls for s in made] == [[(2, 4, 1)] * 2, [(2, 2, 2)] * 2]
  assert not any(s.cfg.greedy for s in made)
  # The two arms draw their own samples: no key of one arm is a key of the other.
  parallel_keys, sequential_keys = made[0].keys, made[1].keys
  assert all(parallel_keys) and all(sequential_keys)
  assert not {str(k) for k in parallel_keys} & {str(k) for k in sequential_keys}
  # The comparison lands in the summary JSON next to the five metrics.
  result = evaluate.EvalResult(
      metrics=dict(
          n=1, accuracy_t1=0.0, accuracy_t2=1.0, delta_t1_t2=1.0, delta_i_to_c=1.0, delta_c_to_i=0.0
      ),
      records=[{"id": "p0", "attempts": ["a", "b"], "rewards": [0.0, 1.0], "reasons": ["x", "y"]}],
  )
  evaluate.write_results(str(tmp_path), "math500", "test", result, out)
  summary, _, _ = read_outputs(tmp_path)
  assert summary["majority_at_4_parallel"] == pytest.approx(1 / 3)
  assert summary["majority_at_4_sequential"] == pytest.approx(2 / 3)


def test_compute_scaling_bad_arguments(model, sampler_cfg, params, env, math_tasks, tok):
  for k in (0, 1, 3):
    with pytest.raises(ValueError, match="even number"):
      evaluate.compute_scaling(params, env, math_tasks, model, sampler_cfg, k, batch_size=BATCH)

  class CodeEnv:
    kind = "code"

  with pytest.raises(ValueError, match="math tasks only"):
    evaluate.compute_scaling(params, CodeEnv(), math_tasks, model, sampler_cfg, 2, batch_size=BATCH)


# --------------------------------------------------------------------------- bad input


def test_cli_missing_dataset_fails_before_the_model(tmp_path):
  """The dataset error comes first although the model path is missing too."""
  missing = tmp_path / "nowhere" / "math500.jsonl"
  gguf = tmp_path / "no_model.gguf"
  proc, secs = _cli(
      [
          f"--config={CONFIG}",
          f"--workdir={tmp_path / 'w'}",
          f"--config.task.source={missing}",
          "--config.model.source=gguf",
          f"--config.model.path={gguf}",
      ],
      timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-3000:]  # an input error: one line, no traceback
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: config.task.source=") and str(missing) in last, last
  assert "Traceback" not in proc.stderr
  assert "no_model.gguf" not in proc.stderr
  assert not (tmp_path / "w").exists()
  assert secs < 60, secs  # seconds: interpreter + imports, nothing compiled or loaded
  print(f"failed in {secs:.1f} s: {last}")


def _bad_config(tmp_path, **task):
  c = load_config()
  c.model.source = "gguf"  # would fail if it were ever reached
  c.model.path = str(tmp_path / "no_model.gguf")
  for k, v in task.items():
    setattr(c.task, k, v)
  config_lib.validate(c)  # the CLI validates first; these configs are valid
  return c


def test_bad_input_fails_before_the_model(tmp_path):
  # A record without an answer: the file and line are named.
  no_answer = tmp_path / "no_answer.jsonl"
  no_answer.write_text(
      json.dumps({"question": "What is 1+1?", "answer": "\\boxed{2}"})
      + "\n"
      + json.dumps({"question": "What is 2+2?"})
      + "\n"
  )
  with pytest.raises(ValueError, match=rf"{no_answer}:2: record has no answer"):
    build.environment(_bad_config(tmp_path, source=str(no_answer)))
  # A GSM8K record whose answer has no final '####' answer.
  gsm = tmp_path / "gsm.jsonl"
  gsm.write_text(json.dumps({"question": "q", "answer": "just words"}) + "\n")
  with pytest.raises(ValueError, match=rf"{gsm}:1: .*####"):
    build.environment(_bad_config(tmp_path, name="gsm8k", source=str(gsm)))
  # A missing evaluation source (the training source exists).
  with pytest.raises(FileNotFoundError, match="task.eval_source"):
    build.environment(_bad_config(tmp_path, eval_source=str(tmp_path / "nope.jsonl")))
  # An unknown dataset name: validation names the field and the known datasets.
  c = load_config()
  c.task.name = "mathh"
  with pytest.raises(ValueError, match=r"config.task.name='mathh': unknown dataset.*gsm8k"):
    config_lib.validate(c)
  with pytest.raises(ValueError, match="unknown dataset 'mathh'"):
    build.environment(c)
  # Unknown config-file argument.
  with pytest.raises(ValueError, match="unknown argument"):
    load_config("mbpp")


def test_graded_text_is_cut_at_the_templates_stop_strings():
  from score_jax.environments import truncate_at

  assert (
      truncate_at("The answer is 5.\n\nProblem:\nThe answer is 7.", ["\n\nProblem:"])
      == "The answer is 5."
  )
  assert truncate_at("no stop here", ["\n\nProblem:"]) == "no stop here"
  assert truncate_at("a[DONE]b<x>c", ["<x>", "[DONE]"]) == "a"  # the earliest one wins

"""The `Environment` contract, checked on every environment that is cheap to build:
ToyEnvironment, DatasetEnvironment on math / GSM8K fixtures (real math grader) and on MBPP /
HumanEval code tasks (the real bubblewrap sandbox), and the embedded pair-sum environment
(its tokenizer only; no base model is trained).

Contract: prompt_tokens -> one list of ints per task; instruction_tokens / instructions;
score -> `environments.Scores` (float32 rewards in {0, 1}, one per attempt, reasons from
`rewards.types.REASONS`, texts); train_batches -> batch(step), a pure function of step;
eval_tasks -> a fixed prefix of the held-out problems; pad_id / stop_ids / kind.
"""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from score_jax import build, environments, prompts
from score_jax.data import tasks as tasks_lib
from score_jax.environments import DatasetEnvironment, ToyEnvironment
from score_jax.rewards import code_sandbox
from score_jax.rewards.math_grader import MathGrader
from score_jax.rewards.types import REASONS
from score_jax.environments import Scores
from score_jax import embedded_base
from score_jax.environments import embedded
from score_jax.tasks import pair_sum

DATA = Path(__file__).resolve().parent / "fixtures" / "data"
EOT = "<end_of_turn>"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def math_tasks():
  return tasks_lib.load_tasks("math500", str(DATA / "math500_test.jsonl"), "test")


@pytest.fixture(scope="module")
def gsm_tasks():
  return tasks_lib.load_tasks("gsm8k", str(DATA / "gsm8k.jsonl"), "test")


@pytest.fixture(scope="module")
def mbpp():
  return {
      s: tasks_lib.load_tasks("mbpp", str(DATA / "mbpp.jsonl"), s)
      for s in ("train", "test", "validation")
  }


@pytest.fixture(scope="module")
def humaneval():
  return tasks_lib.load_tasks("humaneval")[:2]


@pytest.fixture(scope="module")
def tok(math_tasks, gsm_tasks, mbpp, humaneval):
  """A small SentencePiece model with Gemma's special pieces whose decode(encode(text)) is
  text (identity normalisation, byte fallback): programs keep their indentation."""
  from score_jax.tokenizer import Tokenizer

  code = mbpp["train"] + mbpp["test"] + mbpp["validation"] + humaneval
  corpus = [prompts.render_turn1(t, "gemma") for t in math_tasks + gsm_tasks + code]
  corpus += [t.solution for t in code]
  corpus += [
      prompts.render_turn2_suffix(k, "gemma", include_end_of_turn=False) for k in prompts.KINDS
  ]
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus * 2),
      model_writer=out,
      vocab_size=800,
      hard_vocab_limit=False,
      model_type="bpe",
      pad_id=0,
      eos_id=1,
      bos_id=2,
      unk_id=3,
      bos_piece="<bos>",
      eos_piece="<eos>",
      control_symbols=["<start_of_turn>", EOT],
      user_defined_symbols=["\n"],
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      byte_fallback=True,
      num_threads=1,
      minloglevel=2,
  )
  return Tokenizer.from_proto(out.getvalue())


@pytest.fixture(scope="module")
def grader():
  g = MathGrader(workers=1)
  yield g
  g.close()


@pytest.fixture(scope="module")
def sandbox():
  sb = code_sandbox.CodeSandbox(code_sandbox.SandboxConfig(timeout_s=10.0, workers=2))
  try:
    assert sb.uses_bwrap
  except code_sandbox.SandboxUnavailable as e:
    pytest.skip(f"no bubblewrap sandbox here: {e}")
  return sb


@pytest.fixture(scope="module")
def pair_tok():
  from score_jax.tokenizer import Tokenizer

  return Tokenizer.from_proto(
      embedded_base.train_tokenizer(embedded_base.BaseRecipe(), num_problems=300)
  )


def _say(tok, text):
  """The ids a model would write for `text` as its answer: the text, then <end_of_turn>."""
  return tok.encode(text, add_bos=False) + [tok.piece_id(EOT)]


# Per environment: (env, tasks, [(attempt ids per task, expected reward per task), ...]).


def _toy_case(request):
  env = ToyEnvironment()
  tasks = env.eval_tasks(4)
  right = [[3 + (t.x % 2 == 0)] for t in tasks]  # 3 is odd, 4 even
  wrong = [[4 - (t.x % 2 == 0), 2] for t in tasks]
  special = [[env.EOS], [env.BOS, 3, 4], [], [env.PAD]]  # never correct
  return env, tasks, [(right, 1.0), (wrong, 0.0), (special, 0.0)]


def _math_case(request):
  tok, tasks = request.getfixturevalue("tok"), request.getfixturevalue("math_tasks")
  env = DatasetEnvironment(
      tok, "gemma", tasks[:2], tasks[2:], grader=request.getfixturevalue("grader")
  )
  right = [_say(tok, f"So the answer is $\\boxed{{{t.reference}}}$.") for t in tasks]
  wrong = [_say(tok, "\\boxed{1234567}") for t in tasks]
  return env, tasks, [(right, 1.0), (wrong, 0.0)]


def _gsm_case(request):
  tok, tasks = request.getfixturevalue("tok"), request.getfixturevalue("gsm_tasks")
  env = DatasetEnvironment(tok, "gemma", tasks, tasks[1:], grader=request.getfixturevalue("grader"))
  right = [_say(tok, f"Adding up.\n#### {t.reference}") for t in tasks]
  wrong = [_say(tok, "#### 99999") for t in tasks]
  return env, tasks, [(right, 1.0), (wrong, 0.0)]


def _mbpp_case(request):
  tok, m = request.getfixturevalue("tok"), request.getfixturevalue("mbpp")
  env = DatasetEnvironment(
      tok, "gemma", m["train"], m["test"], grader=request.getfixturevalue("sandbox")
  )
  tasks = m["test"]
  right = [_say(tok, t.solution + "\n[DONE]") for t in tasks]
  wrong = [_say(tok, f"def {t.entry_point}(*args):\n  return None\n[DONE]") for t in tasks]
  return env, tasks, [(right, 1.0), (wrong, 0.0)]


def _pair_case(request, restate=False):
  tok = request.getfixturevalue("pair_tok")
  env = embedded.PairSumEnvironment(tok, restate=restate)
  tasks = env.eval_tasks(3)
  right = [env.response_tokens(p.answer) for p in tasks]
  wrong = [
      env.response_tokens(pair_sum.format_answer(p.numbers[0], p.numbers[1], p.target))
      if sum(p.numbers[:2]) != p.target
      else env.response_tokens("1 + 1")
      for p in tasks
  ]
  return env, tasks, [(right, 1.0), (wrong, 0.0)]


CASES = {
    "toy": _toy_case,
    "math": _math_case,
    "gsm8k": _gsm_case,
    "mbpp": _mbpp_case,
    "pair_sum": _pair_case,
    "pair_sum_restate": lambda r: _pair_case(r, restate=True),
}
KIND = {
    "toy": "toy",
    "math": "math",
    "gsm8k": "gsm8k",
    "mbpp": "code",
    "pair_sum": "math",
    "pair_sum_restate": "math",
}


@pytest.fixture(params=list(CASES))
def case(request):
  return (request.param, *CASES[request.param](request))


def _is_id_list(ids, vocab):
  return (
      isinstance(ids, list)
      and all(type(i) is int for i in ids)
      and all(0 <= i < vocab for i in ids)
  )


# --------------------------------------------------------------------------- the contract


def test_prompt_and_instruction_tokens(case):
  name, env, tasks, _ = case
  assert env.kind == KIND[name]
  ps = env.prompt_tokens(tasks)
  assert isinstance(ps, list) and len(ps) == len(tasks)
  for p in ps:
    assert p and _is_id_list(p, env.vocab_size), p
  assert env.prompt_tokens(tasks[:1]) == ps[:1]  # per task, not per batch
  instr = env.instruction_tokens()
  assert instr and _is_id_list(instr, env.vocab_size)
  per_task = env.instructions(tasks)
  assert len(per_task) == len(tasks) and all(_is_id_list(i, env.vocab_size) for i in per_task)
  if name != "pair_sum_restate":
    assert all(i == instr for i in per_task)
  # Special ids: ints, the stop ids a tuple the sampler can take; pad is not a prompt id.
  assert type(env.pad_id) is int and 0 <= env.pad_id < env.vocab_size
  assert isinstance(env.stop_ids, tuple) and env.stop_ids
  assert all(type(i) is int and 0 <= i < env.vocab_size for i in env.stop_ids)
  assert not any(env.pad_id in p for p in ps)


def test_score_returns_scores(case):
  name, env, tasks, attempts = case
  for ids, reward in attempts:
    s = env.score(tasks, ids)
    assert isinstance(s, Scores)
    assert s.rewards.dtype == np.float32 and s.rewards.shape == (len(tasks),)
    assert s.rewards.tolist() == [reward] * len(tasks), (name, s)
    assert len(s.reasons) == len(tasks) and set(s.reasons) <= set(REASONS)
    assert [r == "correct" for r in s.reasons] == [x == 1.0 for x in s.rewards]
    assert len(s.texts) == len(tasks) and all(isinstance(t, str) for t in s.texts)
    if name == "mbpp":
      assert s.tests_passed.shape == s.tests_total.shape == (len(tasks),)
    else:
      assert s.tests_passed is None and s.tests_total is None
  # Mixed: row i answers tasks[i]; correct and wrong attempts interleaved keep their rows.
  (right, _), (wrong, _) = attempts[:2]
  mixed = [right[i] if i % 2 else wrong[i] for i in range(len(tasks))]
  assert env.score(tasks, mixed).rewards.tolist() == [float(i % 2) for i in range(len(tasks))]
  # The same problem may fill several rows (num_samples): each row is graded on its own.
  rows = [tasks[0]] * 3
  assert env.score(rows, [right[0], wrong[0], right[0]]).rewards.tolist() == [1.0, 0.0, 1.0]


def test_train_batches_are_a_pure_function_of_step(case):
  name, env, _, _ = case
  bs = 2
  batch = env.train_batches(bs, seed=3)
  assert callable(batch)
  got = [batch(s) for s in range(4)]
  assert all(isinstance(b, list) and len(b) == bs for b in got)
  again = env.train_batches(bs, seed=3)  # a resumed run rebuilds the stream
  assert [again(s) for s in (3, 0, 2, 1)] == [got[3], got[0], got[2], got[1]]
  # Training problems are problems of this environment: they have prompts and can be scored.
  for b in got:
    assert len(env.prompt_tokens(b)) == bs
  if isinstance(env, DatasetEnvironment):
    assert all(t in env.train for b in got for t in b)


def test_eval_tasks_are_a_fixed_prefix(case):
  name, env, _, _ = case
  a = env.eval_tasks(2)
  assert len(a) == 2
  assert env.eval_tasks(2) == a
  assert env.eval_tasks(1) == a[:1]
  assert env.eval_tasks(0) == []


# --------------------------------------------------------------------------- ToyEnvironment


def test_toy_environment():
  env = ToyEnvironment(vocab_size=32, instruction=(30, 31))
  assert (env.kind, env.pad_id, env.stop_ids, env.vocab_size) == ("toy", 0, (2,), 32)
  assert env.tokenizer is None
  tasks = [environments.ToyTask(x=5, y=9), environments.ToyTask(x=8, y=3)]
  assert env.prompt_tokens(tasks) == [[1, 9, 5], [1, 3, 8]]
  assert env.instruction_tokens() == [30, 31]
  assert env.instructions(tasks) == [[30, 31], [30, 31]]
  s = env.score(tasks * 3, [[7, 2], [7, 2], [10], [10], [2], []])
  assert s.rewards.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
  assert s.reasons == [
      "correct",
      "wrong_answer",
      "wrong_answer",
      "correct",
      "wrong_answer",
      "wrong_answer",
  ]
  assert s.texts == ["7 2", "7 2", "10", "10", "2", ""]
  assert env.decode([4, 5, 2]) == "4 5 2"
  # Problems use ordinary tokens; training streams differ by seed and by step.
  ev = env.eval_tasks(50)
  assert all(3 <= t.x < 32 and 3 <= t.y < 32 and t.id == f"{t.x}-{t.y}" for t in ev)
  assert env.train_batches(5, 0)(0) != env.train_batches(5, 1)(0)
  assert env.train_batches(5, 0)(0) != env.train_batches(5, 0)(1)
  assert len(env.train_batches(1000, 0)(7)) == 1000  # an endless stream: any batch size


def test_from_config_builds_the_toy_environment():
  from score_jax import config_lib

  c = config_lib.default_config()
  c.task.name = "toy"
  env = build.environment(c)
  assert type(env) is ToyEnvironment and env.kind == "toy"


# --------------------------------------------------------------------------- DatasetEnvironment


def test_dataset_environment_ids_follow_the_tokenizer_and_template(tok, math_tasks, grader):
  env = DatasetEnvironment(tok, "gemma", math_tasks, [], grader=grader)
  assert env.kind == "math" and env.pad_id == tok.pad_id == 0
  assert env.stop_ids == tok.stop_ids == (tok.eos_id, tok.piece_id(EOT))
  assert env.vocab_size == tok.vocab_size
  ps = env.prompt_tokens(math_tasks)
  for t, p in zip(math_tasks, ps):
    assert p == tok.encode(prompts.render_turn1(t, "gemma"), add_bos=True)
    assert p[0] == tok.bos_id and p.count(tok.bos_id) == 1
    opens_model_turn = tok.encode("\n<start_of_turn>model\n", add_bos=False)
    assert p[-len(opens_model_turn) :] == opens_model_turn
  instr = env.instruction_tokens()
  # y1 ends with the model's own <end_of_turn>: the instruction starts after it, no BOS.
  assert instr == tok.encode(
      prompts.render_turn2_suffix("math", "gemma", include_end_of_turn=False), add_bos=False
  )
  assert tok.bos_id not in instr and instr[0] != tok.piece_id(EOT)
  assert prompts.correction_instruction("math") in tok.decode(instr, stop_at_stop=False)
  code_env = DatasetEnvironment(
      tok,
      "gemma",
      [],
      tasks_lib.load_tasks("mbpp", str(DATA / "mbpp.jsonl"), "test"),
      grader=object(),
  )
  assert code_env.kind == "code"
  assert prompts.correction_instruction("code") in tok.decode(
      code_env.instruction_tokens(), stop_at_stop=False
  )


def test_dataset_environment_train_batches_and_held_out(tok, math_tasks, grader):
  train = [dataclasses.replace(math_tasks[i % 4], id=f"t{i}") for i in range(10)]
  env = DatasetEnvironment(tok, "gemma", train, math_tasks[:3], grader=grader)
  batch = env.train_batches(3, seed=0)
  ids = lambda b: [t.id for t in b]  # noqa: E731
  # Epoch-wise permutations: 10 // 3 = 3 batches per epoch, disjoint within an epoch.
  for epoch in range(2):
    seen = sum((ids(batch(3 * epoch + i)) for i in range(3)), [])
    assert len(seen) == 9 and len(set(seen)) == 9 and set(seen) <= {t.id for t in train}
  assert ids(batch(0)) != ids(batch(3))  # a new epoch, a new order
  assert ids(env.train_batches(3, seed=1)(0)) != ids(batch(0))
  # One batch per epoch: every batch is the whole training set, reshuffled.
  whole = env.train_batches(10, seed=0)
  assert all(sorted(ids(whole(s))) == sorted(t.id for t in train) for s in range(3))
  assert ids(whole(0)) != ids(whole(1))
  # Fewer tasks than one batch: a clear error when the stream is made.
  with pytest.raises(ValueError, match="^10 training tasks, fewer than one batch of 11$"):
    env.train_batches(11, seed=0)
  eval_only = DatasetEnvironment(tok, "gemma", [], math_tasks, grader=grader)
  with pytest.raises(ValueError, match="^0 training tasks, fewer than one batch of 1$"):
    eval_only.train_batches(1, seed=0)
  # Held out: the first n in file order, all of them when n is larger.
  assert env.eval_tasks(2) == math_tasks[:2]
  assert env.eval_tasks(100) == math_tasks[:3]


def test_dataset_environment_rejects_no_tasks_and_mixed_kinds(tok, math_tasks, gsm_tasks):
  with pytest.raises(ValueError, match="the environment has no tasks"):
    DatasetEnvironment(tok, "gemma", [], [])
  with pytest.raises(ValueError, match=r"one task kind per run, got \['gsm8k', 'math'\]"):
    DatasetEnvironment(tok, "gemma", math_tasks, gsm_tasks)


def test_math_score_reasons_and_stops(tok, math_tasks, grader):
  env = DatasetEnvironment(tok, "gemma", [], math_tasks, grader=grader)
  t = math_tasks[:3]  # references 2, \frac{3}{2}, 49
  assert [x.reference for x in t] == ["2", "\\frac{3}{2}", "49"]
  s = env.score(
      t * 2,
      [
          _say(tok, "\\boxed{2}") + tok.encode("\\boxed{7}", add_bos=False),  # after the stop
          _say(tok, "so \\boxed{1.5}"),
          _say(tok, "I cannot tell."),
          tok.encode("The final answer is $3$.", add_bos=False),  # budget ran out: no stop
          tok.encode("\\boxed{\\frac{3}{2}}", add_bos=False) + [tok.eos_id],
          [tok.pad_id] * 3,  # nothing written
      ],
  )
  assert s.rewards.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
  assert s.reasons == ["correct", "correct", "no_answer", "wrong_answer", "correct", "no_answer"]
  assert s.texts[0] == "\\boxed{2}" and s.texts[4] == "\\boxed{\\frac{3}{2}}"
  assert s.texts[5] == ""
  # The plain template also cuts the text where the next few-shot problem would begin.
  plain = DatasetEnvironment(tok, "plain", [], math_tasks, grader=grader)
  s = plain.score(
      t[:1], [tok.encode("\\boxed{2}\n\nProblem:\nWhat is 3+4?\n\\boxed{7}", add_bos=False)]
  )
  assert s.texts == ["\\boxed{2}"] and s.rewards.tolist() == [1.0]


# --------------------------------------------------------------------------- code tasks


def _fenced(code):
  return f"Here is my solution:\n```python\n{code}\n```\n[DONE]"


def test_mbpp_honest_program_passes_every_test(tok, mbpp, sandbox):
  # mbpp/511 (validation) reads LIMIT_OFFSET from its test_setup_code: the setup is part of
  # the program (as one file) as well as of the tests.
  tasks = mbpp["test"] + mbpp["train"] + mbpp["validation"]
  assert [t.id for t in tasks][-1] == "mbpp/511" and tasks[-1].test_setup
  env = DatasetEnvironment(tok, "gemma", mbpp["train"], mbpp["test"], grader=sandbox)
  s = env.score(tasks, [_say(tok, _fenced(t.solution)) for t in tasks])
  assert s.reasons == ["correct"] * len(tasks), s
  assert s.rewards.tolist() == [1.0] * len(tasks)
  assert s.tests_passed.tolist() == s.tests_total.tolist() == [3] * len(tasks)
  assert s.texts[0].startswith("Here is my solution:") and "[DONE]" not in s.texts[0]


def test_mbpp_wrong_programs_get_zero(tok, mbpp, sandbox):
  env = DatasetEnvironment(tok, "gemma", [], mbpp["test"], grader=sandbox)
  rm, sq = mbpp["test"]  # remove_occ, squares
  assert (rm.entry_point, sq.entry_point) == ("remove_occ", "squares")
  s = env.score(
      [sq, rm, sq, rm, sq],
      [
          _say(tok, "def squares(xs):\n  return xs\n[DONE]"),  # passes 1 of 3 asserts
          _say(
              tok,
              "def remove_occ(s, ch):\n  return s if s == 'hello' else s.replace(ch, '')\n"
              "[DONE]",
          ),  # 2 of 3
          _say(tok, "def squares(xs)\n  return xs\n"),  # does not compile
          _say(tok, "def remove_occ(s, ch):\n  raise RuntimeError('no')\n"),
          _say(tok, "print('no function here')\n"),
      ],
  )
  assert s.rewards.tolist() == [0.0] * 5
  assert s.reasons[:4] == ["wrong_answer", "wrong_answer", "syntax_error", "crash"]
  assert s.tests_passed.tolist() == [1, 2, 0, 0, 0]
  assert s.tests_total.tolist() == [3] * 5


def test_test_setup_runs_with_the_tests(tok, sandbox):
  task = tasks_lib.Task(
      id="x/1",
      prompt="Write f.",
      reference="assert f(1) == K\n",
      kind="code",
      entry_point="f",
      test_setup="K = 2",
  )
  env = DatasetEnvironment(tok, "gemma", [], [task], grader=sandbox)
  no_setup = dataclasses.replace(task, test_setup="")
  s = env.score([task, no_setup], [_say(tok, "def f(x):\n  return 2 * x\n")] * 2)
  assert s.rewards.tolist() == [1.0, 0.0]
  assert s.tests_passed.tolist() == [1, 0]


def test_humaneval_completion_is_appended_to_the_signature(tok, humaneval, sandbox):
  env = DatasetEnvironment(tok, "gemma", [], humaneval, grader=sandbox)
  bodies = [t.solution[len(t.prompt) :] for t in humaneval]
  assert all(t.solution.startswith(t.prompt) for t in humaneval)
  s = env.score(humaneval, [_say(tok, b) for b in bodies])  # the body only: prompt + body
  assert s.rewards.tolist() == [1.0, 1.0], s
  assert (s.tests_passed == s.tests_total).all() and (s.tests_total >= 1).all()
  full = env.score(humaneval[:1], [_say(tok, _fenced(humaneval[0].solution))])
  assert full.rewards.tolist() == [1.0]  # a whole program with the def is run as is
  wrong = env.score(humaneval[:1], [_say(tok, "    return not True\n")])
  assert wrong.rewards.tolist() == [0.0] and wrong.reasons == ["wrong_answer"]
  assert wrong.tests_passed[0] < wrong.tests_total[0]


def test_extract_code():
  from score_jax.environments import extract_code

  assert extract_code("text\n```python\ndef f():\n  return 1\n```\nmore") == "def f():\n  return 1"
  assert extract_code("```py\na = 1\n```\n```\nb = 2\n```") == "b = 2"  # the last block
  assert extract_code("def g():\n  pass\n[DONE]") == "def g():\n  pass"  # no fence: all
  assert extract_code("```python\nx = 3\n") == "x = 3"  # an unclosed fence (budget ran out)


# --------------------------------------------------------------------------- embedded


def test_pair_sum_environment(pair_tok):
  env = embedded.PairSumEnvironment(pair_tok)
  assert env.kind == "math" and env.pad_id == 0
  assert env.stop_ids == pair_tok.stop_ids and pair_tok.piece_id(EOT) in env.stop_ids
  ev = env.eval_tasks(20)
  assert len({p.id for p in ev}) == 20
  train = [p for s in range(10) for p in env.train_batches(4, seed=0)(s)]
  assert len(train) == 40 and not {p.prompt for p in train} & {p.prompt for p in ev}
  assert env.train_batches(4, seed=0)(2) != env.train_batches(4, seed=1)(2)
  p = ev[0]
  assert p.prompt in pair_tok.decode(env.prompt_tokens([p])[0], stop_at_stop=False)
  s = env.score(
      [p] * 4,
      [
          env.response_tokens(p.answer),
          env.response_tokens(""),
          env.response_tokens("nothing to say"),
          env.response_tokens(f"{p.target} + 0 = {p.target}"),
      ],
  )
  assert s.rewards.tolist() == [1.0, 0.0, 0.0, 0.0]
  assert s.reasons == ["correct", "no_answer", "no_answer", "wrong_answer"]
  assert s.texts[0] == " " + p.answer


def test_pair_sum_restate_instructions(pair_tok):
  plain = embedded.PairSumEnvironment(pair_tok)
  env = embedded.PairSumEnvironment(pair_tok, restate=True)
  tasks = env.eval_tasks(3)
  per_task = env.instructions(tasks)
  assert len({tuple(i) for i in per_task}) == 3  # each restates its own problem
  for p, ids in zip(tasks, per_task):
    text = pair_tok.decode(ids, stop_at_stop=False)
    assert embedded.CORRECTION in text and p.prompt in text
    assert pair_sum.QUESTION not in text.split(p.prompt)[0]  # the bare question is replaced
  assert env.instruction_tokens() == plain.instruction_tokens()
  assert plain.instructions(tasks) == [plain.instruction_tokens()] * 3

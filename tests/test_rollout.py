"""The compact per-row rollout layout [prompt, y1, instruction, y2] of `collect_async`, its
rows (task-major, num_samples x followups), masks and padding, and the per-turn scores of
`Pending.score`, with a tiny random policy on toy tasks whose prompts and instructions have
different lengths per task."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from score_jax import environments, rollout
from score_jax.model import init_model, tiny
from score_jax.sampler import SampleOutput, Sampler, SamplerConfig, Turn

VOCAB = 32


class RaggedToy(environments.ToyEnvironment):
  """ToyEnvironment (its parity checker) with a prompt of 3 + task['extra'] tokens and an
  instruction of 1 + task['instr'] tokens per task, several stop tokens (so rows stop at
  different steps), and a record of every `score` call."""

  def __init__(self):
    super().__init__(vocab_size=VOCAB)
    self.stop_ids = (2, 5, 7, 11, 13)
    self.calls = []

  def prompt_tokens(self, tasks):
    return [[self.BOS] + [20 + k for k in range(t.extra)] + [t.y, t.x] for t in tasks]

  def instructions(self, tasks):
    return [[30] + [31] * t.instr for t in tasks]

  def score(self, tasks, attempts):
    self.calls.append((list(tasks), [list(a) for a in attempts]))
    return super().score(tasks, attempts)


@dataclasses.dataclass(frozen=True)
class RaggedTask:
  id: str
  x: int
  y: int
  extra: int  # prompt tokens beyond ToyEnvironment's three
  instr: int  # instruction tokens beyond the first
  prompt: str = ""


TASKS = [
    RaggedTask(id="a", x=4, y=9, extra=0, instr=2),
    RaggedTask(id="b", x=7, y=3, extra=3, instr=0),
    RaggedTask(id="c", x=9, y=16, extra=1, instr=1),
]


def _toy_rule(task, attempt):
  """ToyEnvironment's checker written out: the first token is ordinary and has x's parity."""
  return float(bool(attempt) and attempt[0] >= 3 and attempt[0] % 2 == task.x % 2)


@pytest.fixture(scope="module")
def model():
  return init_model(tiny("llama", vocab_size=VOCAB), seed=0)


@pytest.fixture(scope="module")
def two_turn(model):
  env = RaggedToy()
  cfg = SamplerConfig(
      prompt_buckets=(4, 8),
      turn_budgets=(5, 4),
      instruction_len=3,
      num_samples=2,
      followups=2,
      temperature=1.0,
      stop_ids=env.stop_ids,
      pad_id=env.pad_id,
  )
  sampler = Sampler(model, cfg)
  pending = rollout.collect_async(sampler, nnx.state(model), env, TASKS, jax.random.key(0))
  host = jax.tree.map(
      np.asarray,
      dict(tokens=pending.tokens, input_mask=pending.input_mask, turn_masks=pending.turn_masks),
  )
  turns = [(np.asarray(t.tokens), np.asarray(t.mask)) for t in pending.out.turns]
  return dict(env=env, cfg=cfg, sampler=sampler, pending=pending, turns=turns, **host)


def _row_parts(d, r):
  """(prompt, y1, instruction, y2) of row r as the env and the sampler produced them."""
  env, cfg = d["env"], d["cfg"]
  task = TASKS[r // cfg.rows_per_prompt]
  (t1, m1), (t2, m2) = d["turns"]
  return (
      env.prompt_tokens([task])[0],
      t1[r][m1[r]].tolist(),
      env.instructions([task])[0],
      t2[r][m2[r]].tolist(),
  )


def test_shapes_and_row_order(two_turn):
  d = two_turn
  cfg, p = d["cfg"], d["pending"]
  assert cfg.rows_per_prompt == 4
  rows, length = 3 * 4, cfg.cache_len(8)  # the longest prompt (6) uses bucket 8: 8+5+4+3
  assert d["tokens"].shape == (rows, length) and d["tokens"].dtype == np.int32
  assert d["input_mask"].shape == (rows, length) and d["input_mask"].dtype == bool
  assert d["turn_masks"].shape == (2, rows, length)
  assert [t.shape for t, _ in d["turns"]] == [(rows, 5), (rows, 4)]
  # Task-major: task i owns rows 4i .. 4i+3 (the very task objects).
  assert len(p.row_tasks) == rows
  assert all(p.row_tasks[r] is TASKS[r // 4] for r in range(rows))
  # Within a task, rows are sample-major: rows 2j, 2j+1 are the followups of sample j and
  # continue one shared first attempt; the two samples differ somewhere.
  (t1, m1), _ = d["turns"]
  np.testing.assert_array_equal(t1[0::2], t1[1::2])
  np.testing.assert_array_equal(m1[0::2], m1[1::2])
  assert any(not np.array_equal(t1[4 * i], t1[4 * i + 2]) for i in range(3))
  # Per-row lengths the sampler reports follow the same order.
  np.testing.assert_array_equal(p.out.prompt_lens, np.repeat([3, 6, 4], 4))
  np.testing.assert_array_equal(p.out.instruction_lens, np.repeat([3, 1, 2], 4))


def test_rows_are_prompt_then_y1_then_instruction_then_y2(two_turn):
  d = two_turn
  lengths1 = d["turns"][0][1].sum(-1)
  # The case is only telling if rows have different lengths (deterministic key).
  assert len(set(lengths1.tolist())) > 1 and (lengths1 < 5).any()
  for r in range(d["tokens"].shape[0]):
    prompt, y1, instr, y2 = _row_parts(d, r)
    assert y1 and y2  # every turn writes at least one token (maybe just the stop)
    expect = prompt + y1 + instr + y2
    n = len(expect)
    assert d["tokens"][r, :n].tolist() == expect, r
    # Right-padded with pad_id, and the input mask covers exactly the conversation.
    assert (d["tokens"][r, n:] == d["env"].pad_id).all(), r
    np.testing.assert_array_equal(d["input_mask"][r], np.arange(d["tokens"].shape[1]) < n)


def test_turn_masks_mark_each_turns_tokens(two_turn):
  d = two_turn
  width = d["tokens"].shape[1]
  pos = np.arange(width)
  for r in range(d["tokens"].shape[0]):
    prompt, y1, instr, y2 = _row_parts(d, r)
    s1 = len(prompt)
    s2 = s1 + len(y1) + len(instr)
    np.testing.assert_array_equal(d["turn_masks"][0, r], (pos >= s1) & (pos < s1 + len(y1)))
    np.testing.assert_array_equal(d["turn_masks"][1, r], (pos >= s2) & (pos < s2 + len(y2)))
    assert d["tokens"][r][d["turn_masks"][0, r]].tolist() == y1
    assert d["tokens"][r][d["turn_masks"][1, r]].tolist() == y2
  # The turn masks are disjoint, inside the input mask, and count the sampler's tokens.
  assert not (d["turn_masks"][0] & d["turn_masks"][1]).any()
  assert not (d["turn_masks"].any(0) & ~d["input_mask"]).any()
  for t, (_, mask) in enumerate(d["turns"]):
    np.testing.assert_array_equal(d["turn_masks"][t].sum(-1), mask.sum(-1))
    np.testing.assert_array_equal(
        d["turn_masks"][t].sum(-1), np.asarray(d["pending"].out.turns[t].lengths)
    )


def test_turns_end_at_a_stop_token_or_the_budget(two_turn):
  d = two_turn
  stops = set(d["env"].stop_ids)
  for (tokens, mask), budget in zip(d["turns"], d["cfg"].turn_budgets):
    for r in range(tokens.shape[0]):
      n = int(mask[r].sum())
      assert mask[r, :n].all() and not mask[r, n:].any()  # valid tokens come first
      assert (tokens[r, n:] == d["env"].pad_id).all()  # then padding
      ids = tokens[r, :n].tolist()
      assert not stops & set(ids[:-1]), (r, ids)  # no stop before the last token
      if n < budget:
        assert ids[-1] in stops, (r, ids)


def test_score_returns_one_scores_per_turn_aligned_with_rows(two_turn):
  d = two_turn
  env, p = d["env"], d["pending"]
  env.calls.clear()
  scores = p.score()
  assert len(scores) == 2 and all(isinstance(s, environments.Scores) for s in scores)
  assert len(env.calls) == 2
  rows = d["tokens"].shape[0]
  for t, (s, (tasks, attempts)) in enumerate(zip(scores, env.calls)):
    # The env grades the row tasks against exactly each row's generated ids of turn t.
    assert tasks == p.row_tasks
    assert attempts == [_row_parts(d, r)[1 + 2 * t] for r in range(rows)]
    assert s.rewards.shape == (rows,) and s.rewards.dtype == np.float32
    expect = [_toy_rule(TASKS[r // 4], attempts[r]) for r in range(rows)]
    np.testing.assert_array_equal(s.rewards, expect)
    assert s.reasons == ["correct" if e else "wrong_answer" for e in expect]
    assert s.texts == [" ".join(map(str, a)) for a in attempts]
    assert s.tests_passed is None and s.tests_total is None
  # The turn-1 scores of followup siblings agree: they share their first attempt.
  np.testing.assert_array_equal(scores[0].rewards[0::2], scores[0].rewards[1::2])


def test_collect_async_rejects_prompts_and_instructions_that_do_not_fit(two_turn):
  d = two_turn
  params = None  # never reached: the shapes are checked on the host first
  long_prompt = [dataclasses.replace(TASKS[0], extra=6)]  # 9 tokens > bucket 8
  with pytest.raises(ValueError, match="prompt of 9 tokens exceeds the largest prompt bucket 8"):
    rollout.collect_async(d["sampler"], params, d["env"], long_prompt, jax.random.key(0))
  long_instr = [TASKS[1], dataclasses.replace(TASKS[0], instr=3)]  # 4 tokens > instruction_len 3
  with pytest.raises(
      ValueError,
      match=r"instruction of task 1 has 4 tokens, more than " r"sampler.instruction_len=3",
  ):
    rollout.collect_async(d["sampler"], params, d["env"], long_instr, jax.random.key(0))


def test_single_turn_rows_are_prompt_then_y1(model):
  env = environments.ToyEnvironment(vocab_size=VOCAB)
  cfg = SamplerConfig(
      prompt_buckets=(4,),
      turn_budgets=(3,),
      instruction_len=0,
      num_samples=2,
      stop_ids=env.stop_ids,
      pad_id=env.pad_id,
  )
  tasks = env.eval_tasks(2)
  p = rollout.collect_async(Sampler(model, cfg), nnx.state(model), env, tasks, jax.random.key(1))
  tokens, valid, turn_masks = map(np.asarray, (p.tokens, p.input_mask, p.turn_masks))
  assert tokens.shape == (4, 4 + 3) and turn_masks.shape == (1, 4, 7)
  assert [t.id for t in p.row_tasks] == [tasks[0].id] * 2 + [tasks[1].id] * 2
  t1, m1 = np.asarray(p.out.turns[0].tokens), np.asarray(p.out.turns[0].mask)
  for r in range(4):
    y1 = t1[r][m1[r]].tolist()
    expect = env.prompt_tokens([tasks[r // 2]])[0] + y1
    assert tokens[r, : len(expect)].tolist() == expect
    assert (tokens[r, len(expect) :] == env.pad_id).all()
    np.testing.assert_array_equal(valid[r], np.arange(7) < len(expect))
    pos = np.arange(7)
    np.testing.assert_array_equal(turn_masks[0, r], (pos >= 3) & (pos < 3 + len(y1)))
  (s,) = p.score()
  np.testing.assert_array_equal(
      s.rewards, [_toy_rule(tasks[r // 2], t1[r][m1[r]].tolist()) for r in range(4)]
  )


# --------------------------------------------------------------------------- host helpers


def test_right_pad():
  calls = []

  def too_long(i, n):
    calls.append((i, int(n)))
    return f"row {i}: {n}"

  out, lens = rollout._right_pad([[1, 2], [3], [], [4, 5, 6]], 3, 9, too_long)
  assert out.dtype == np.int32 and lens.dtype == np.int32
  np.testing.assert_array_equal(out, [[1, 2, 9], [3, 9, 9], [9, 9, 9], [4, 5, 6]])
  np.testing.assert_array_equal(lens, [2, 1, 0, 3])
  assert not calls
  out, lens = rollout._right_pad([], 4, 0, too_long)
  assert out.shape == (0, 4) and lens.shape == (0,)
  # Too long: the error names the longest row.
  with pytest.raises(ValueError, match=r"^row 2: 6$"):
    rollout._right_pad([[1], [1] * 4, [1] * 6, [1] * 5], 3, 0, too_long)
  assert calls == [(2, 6)]


def test_pad_prompts_and_instructions_word_their_errors():
  out, lens = rollout.pad_prompts([[1, 5, 6], [1]], 4, 0)
  np.testing.assert_array_equal(out, [[1, 5, 6, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(lens, [3, 1])
  with pytest.raises(ValueError, match="^prompt 1 has 5 tokens; the prompt bucket is 4$"):
    rollout.pad_prompts([[1], [1] * 5], 4, 0)
  out, lens = rollout.pad_instructions([[30, 31], [30]], 3, 7)
  np.testing.assert_array_equal(out, [[30, 31, 7], [30, 7, 7]])
  np.testing.assert_array_equal(lens, [2, 1])
  with pytest.raises(
      ValueError,
      match="^the instruction of task 0 has 3 tokens, more than " r"sampler.instruction_len=2$",
  ):
    rollout.pad_instructions([[30, 31, 31], [30]], 2, 0)


def test_turn_token_lists_keep_valid_tokens_per_turn_and_row():
  def turn(tokens, mask):
    z = np.zeros(np.shape(tokens), np.float32)
    return Turn(
        tokens=np.asarray(tokens, np.int32), mask=np.asarray(mask, bool), logprobs=z, logprobs_raw=z
    )

  out = SampleOutput(
      turns=(
          turn([[4, 2, 0], [6, 7, 8]], [[1, 1, 0], [1, 1, 1]]),
          turn([[2, 0], [9, 0]], [[1, 0], [1, 0]]),
      ),
      prompt_lens=np.array([3, 3]),
      instruction_lens=np.array([1, 1]),
      cache=None,
  )
  assert rollout.turn_token_lists(out) == [[[4, 2], [6, 7, 8]], [[2], [9]]]
  empty = SampleOutput(
      turns=(turn(np.zeros((2, 0)), np.zeros((2, 0))),),
      prompt_lens=np.array([1, 1]),
      instruction_lens=np.array([0, 0]),
      cache=None,
  )
  assert rollout.turn_token_lists(empty) == [[[], []]]


def _train_batch(r=6, l=5, t=2, advantages=True):
  rng = np.random.default_rng(0)
  f32 = lambda *s: jax.numpy.asarray(rng.normal(size=s), jax.numpy.float32)
  return rollout.TrainBatch(
      tokens=jax.numpy.asarray(rng.integers(0, VOCAB, (r, l)), jax.numpy.int32),
      input_mask=jax.numpy.asarray(rng.random((r, l)) < 0.8),
      turn_masks=jax.numpy.asarray(rng.random((t, r, l)) < 0.5),
      ref_logprobs=f32(r, l),
      rewards=f32(t, r),
      advantages=f32(t, r) if advantages else None,
      attempt_logprobs=f32(t, r),
  )


@pytest.mark.parametrize("num_micro", [1, 2, 3, 6])
def test_train_batch_micro_batches_are_consecutive_rows(num_micro):
  batch = _train_batch()
  micro = batch.micro_batches(num_micro)
  rows = 6 // num_micro
  for m in range(num_micro):
    sl = slice(m * rows, (m + 1) * rows)
    part = jax.tree.map(lambda x: x[m], micro)
    part.check()
    np.testing.assert_array_equal(part.tokens, batch.tokens[sl])
    np.testing.assert_array_equal(part.input_mask, batch.input_mask[sl])
    np.testing.assert_array_equal(part.turn_masks, batch.turn_masks[:, sl])
    np.testing.assert_array_equal(part.ref_logprobs, batch.ref_logprobs[sl])
    np.testing.assert_array_equal(part.rewards, batch.rewards[:, sl])
    np.testing.assert_array_equal(part.advantages, batch.advantages[:, sl])
    np.testing.assert_array_equal(part.attempt_logprobs, batch.attempt_logprobs[:, sl])


def test_train_batch_without_advantages_splits_and_stays_none():
  micro = _train_batch(advantages=False).micro_batches(2)
  assert micro.advantages is None and micro.tokens.shape == (2, 3, 5)


def test_train_batch_check_rejects_a_wrong_layout():
  batch = _train_batch()
  batch.check()
  with pytest.raises(AssertionError):
    dataclasses.replace(batch, rewards=batch.rewards.T).check()  # [R, T], not [T, R]
  with pytest.raises(AssertionError):
    dataclasses.replace(batch, ref_logprobs=batch.ref_logprobs.astype(jax.numpy.float16)).check()
  with pytest.raises(AssertionError):
    dataclasses.replace(batch, turn_masks=batch.turn_masks[:, :4]).check()

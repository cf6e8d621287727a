"""Multi-turn sampler against a naive full-recompute reference, teacher forcing and sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.model import init_model, tiny
from score_jax.sampler import Sampler, SamplerConfig, sample_token
from score_jax.teacher_forcing import assemble_sequences, gather_turn_logprobs, sequence_logprobs

PROMPTS = np.array(
    [[5, 6, 7, 8, 9, 10], [11, 12, 0, 0, 0, 0], [13, 0, 0, 0, 0, 0], [14, 15, 16, 17, 0, 0]]
)
PROMPT_LENS = np.array([6, 2, 1, 4])
INSTR = np.array([21, 22, 23])


def _model(family, seed=0):
  return init_model(tiny(family, vocab_size=64), seed=seed)


@nnx.jit
def _full_forward(model, tokens, mask):
  return model(tokens, mask)


def _last_logits(model, rows):
  """Full forward over every row's whole sequence (fixed padded width: one compile)."""
  width = 32
  toks = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    toks[i, : len(r)] = r
  lens = np.array([len(r) for r in rows])
  logits = _full_forward(model, jnp.asarray(toks), jnp.arange(width)[None] < lens[:, None])
  return logits[np.arange(len(rows)), lens - 1]


def naive_sample(model, prompts, lens, instr, key, cfg):
  """Reference: recompute every row's whole sequence at every step, same key schedule."""
  n = cfg.num_samples
  rows = [list(prompts[r, : lens[r]]) for r in range(len(lens)) for _ in range(n)]
  turns = []
  for i, budget in enumerate(cfg.turn_budgets):
    if i:
      rows = [r + list(instr) for r in rows]
    done = np.zeros(len(rows), bool)
    toks = np.full((len(rows), budget), cfg.pad_id)
    mask = np.zeros((len(rows), budget), bool)
    lps = np.zeros((len(rows), budget), np.float32)
    tkey = jax.random.fold_in(key, i)
    for t in range(budget):
      if done.all():
        break
      logits = _last_logits(model, rows)
      tok, lp, _ = sample_token(logits, jax.random.fold_in(tkey, t), cfg)
      for r in np.flatnonzero(~done):
        rows[r].append(int(tok[r]))
        toks[r, t], mask[r, t], lps[r, t] = tok[r], True, lp[r]
        done[r] |= int(tok[r]) in cfg.stop_ids
    turns.append((toks, mask, lps))
  return turns


def _check_against_naive(model, cfg, key=jax.random.key(3)):
  sampler = Sampler(model, cfg)
  out = sampler(nnx.state(model), PROMPTS, PROMPT_LENS, INSTR, None, key)
  ref = naive_sample(model, PROMPTS, PROMPT_LENS, INSTR, key, cfg)
  for turn, (toks, mask, lps) in zip(out.turns, ref):
    np.testing.assert_array_equal(turn.mask, mask)
    np.testing.assert_array_equal(np.where(mask, turn.tokens, -1), np.where(mask, toks, -1))
    np.testing.assert_allclose(turn.logprobs, lps, atol=1e-5)
  return out


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_greedy_two_turns_equal_naive_recompute(family):
  cfg = SamplerConfig(
      prompt_buckets=(8,), turn_budgets=(7, 5), instruction_len=4, greedy=True, stop_ids=(63,)
  )
  _check_against_naive(_model(family), cfg)


def test_stop_tokens_budget_and_empty_answers():
  """Rows stop at different steps (one on its very first token), others hit the budget."""
  model = _model("gemma3", seed=1)
  base = SamplerConfig(
      prompt_buckets=(8,), turn_budgets=(6, 4), instruction_len=3, temperature=1.5, stop_ids=(63,)
  )
  key = jax.random.key(7)
  free = Sampler(model, base)(nnx.state(model), PROMPTS, PROMPT_LENS, INSTR, None, key)
  t1 = np.asarray(free.turns[0].tokens)
  # Stop tokens: row 0's first token (empty answer) and row 1's fourth token.
  stops = (int(t1[0, 0]), int(t1[1, 3]))
  cfg = SamplerConfig(**{**base.__dict__, "stop_ids": stops})
  out = _check_against_naive(model, cfg, key)
  lens1 = np.asarray(out.turns[0].lengths)
  assert lens1[0] == 1, "an answer that is just the stop token"
  assert lens1[1] <= 4
  assert (lens1 <= 6).all() and (lens1 == 6).any(), "some row must exhaust the budget"
  # After a row stops, its tokens are padding and are masked out.
  m = np.asarray(out.turns[0].mask)
  assert not m[0, 1:].any()
  assert (np.asarray(out.turns[0].tokens)[~m] == cfg.pad_id).all()


def test_zero_budget_turn_is_empty():
  model = _model("llama")
  cfg = SamplerConfig(prompt_buckets=(8,), turn_budgets=(0, 3), instruction_len=3, greedy=True)
  out = _check_against_naive(model, cfg)
  assert out.turns[0].tokens.shape == (4, 0)
  assert int(out.turns[1].mask.sum()) > 0


@pytest.mark.parametrize(
    "cfg_kw",
    [dict(temperature=0.7), dict(temperature=1.0, top_k=5), dict(temperature=1.3, top_p=0.8)],
)
def test_logprobs_match_teacher_forcing(cfg_kw):
  model = _model("gemma3", seed=2)
  cfg = SamplerConfig(
      prompt_buckets=(8,),
      turn_budgets=(6, 6),
      instruction_len=3,
      num_samples=3,
      stop_ids=(63,),
      **cfg_kw,
  )
  out = Sampler(model, cfg)(nnx.state(model), PROMPTS, PROMPT_LENS, INSTR, None, jax.random.key(0))
  seq, valid, turn_masks = assemble_sequences(out, PROMPTS, INSTR)
  tempered = sequence_logprobs(model, seq, valid, cfg.temperature)
  raw = sequence_logprobs(model, seq, valid)
  for t, turn in enumerate(out.turns):
    budget = turn.tokens.shape[1]
    np.testing.assert_array_equal(turn_masks[t].sum(-1), turn.mask.sum(-1))
    np.testing.assert_allclose(
        gather_turn_logprobs(tempered, turn_masks[t], budget), turn.logprobs, atol=1e-5
    )
    np.testing.assert_allclose(
        gather_turn_logprobs(raw, turn_masks[t], budget), turn.logprobs_raw, atol=1e-5
    )
  # The n samples of one prompt share the prompt but are different samples.
  t1 = np.asarray(out.turns[0].tokens).reshape(4, 3, -1)
  assert any(not np.array_equal(t1[b, 0], t1[b, 1]) for b in range(4))


def test_top_k_and_top_p_restrict_support():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  draw = lambda cfg: np.array([int(sample_token(logits, k, cfg)[0][0]) for k in keys[:200]])
  assert set(draw(SamplerConfig(top_k=2))) == {0, 1}
  assert set(draw(SamplerConfig(top_p=0.75))) == {0, 1}
  assert set(draw(SamplerConfig(top_p=0.85))) == {0, 1, 2}


def test_deterministic_and_no_recompilation():
  model = _model("gemma3")
  cfg = SamplerConfig(
      prompt_buckets=(8, 16), turn_budgets=(4, 4), instruction_len=3, num_samples=2, stop_ids=(63,)
  )
  sampler = Sampler(model, cfg)
  params = nnx.state(model)
  a = sampler(params, PROMPTS, PROMPT_LENS, INSTR, None, jax.random.key(1))
  b = sampler(params, PROMPTS, PROMPT_LENS, INSTR, None, jax.random.key(1))
  np.testing.assert_array_equal(a.turns[1].tokens, b.turns[1].tokens)
  # A new batch in the same bucket (other lengths, other width <= 8) reuses the program.
  sampler(
      params, PROMPTS[::-1, :5], np.minimum(PROMPT_LENS[::-1], 5), INSTR, None, jax.random.key(2)
  )
  assert sampler.trace_count == 1
  sampler(params, np.pad(PROMPTS, ((0, 0), (0, 6))), PROMPT_LENS, INSTR, None, jax.random.key(2))
  assert sampler.trace_count == 2  # a larger bucket compiles once more


def test_sharded_sampling_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8 (see conftest)")
  model = _model("gemma3", seed=4)
  cfg = SamplerConfig(
      prompt_buckets=(8,),
      turn_budgets=(5, 5),
      instruction_len=3,
      num_samples=2,
      temperature=1.0,
      stop_ids=(63,),
  )
  prompts = np.concatenate([PROMPTS, PROMPTS[::-1]])
  lens = np.concatenate([PROMPT_LENS, PROMPT_LENS[::-1]])
  key = jax.random.key(5)
  single = Sampler(model, cfg)(nnx.state(model), prompts, lens, INSTR, None, key)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  params = jax.device_put(nnx.state(model), jax.sharding.NamedSharding(mesh, jax.P()))
  sharded = Sampler(model, cfg, mesh=mesh)(params, prompts, lens, INSTR, None, key)
  assert len(sharded.turns[0].tokens.sharding.device_set) == 8
  for s, m in zip(single.turns, sharded.turns):
    np.testing.assert_array_equal(s.tokens, m.tokens)
    np.testing.assert_allclose(s.logprobs, m.logprobs, atol=1e-5)


def test_bad_inputs_are_named():
  model = _model("llama")
  cfg = SamplerConfig(prompt_buckets=(8,), turn_budgets=(2, 2), instruction_len=2)
  sampler = Sampler(model, cfg)
  params = nnx.state(model)
  with pytest.raises(ValueError, match="largest prompt bucket 8"):
    sampler(params, np.ones((1, 9), int), [9], INSTR[:2])
  with pytest.raises(ValueError, match="instruction_len=2"):
    sampler(params, PROMPTS, PROMPT_LENS, INSTR)
  with pytest.raises(ValueError, match="prompt_lens"):
    sampler(params, PROMPTS, [0, 1, 1, 1], INSTR[:2])
  with pytest.raises(ValueError, match="SamplerConfig.temperature"):
    SamplerConfig(temperature=0.0)


def test_followups_share_the_first_attempt():
  """Second attempts in follow-up groups continue one shared first attempt (and cache)."""
  model = _model("gemma3", seed=4)
  cfg = SamplerConfig(
      prompt_buckets=(8,),
      turn_budgets=(5, 5),
      instruction_len=3,
      num_samples=2,
      followups=3,
      stop_ids=(63,),
  )
  assert cfg.rows_per_prompt == 6
  out = Sampler(model, cfg)(nnx.state(model), PROMPTS, PROMPT_LENS, INSTR, None, jax.random.key(7))
  t1 = np.asarray(out.turns[0].tokens).reshape(4, 2, 3, -1)
  t2 = np.asarray(out.turns[1].tokens).reshape(4, 2, 3, -1)
  # Siblings: the same first attempt, different second attempts.
  np.testing.assert_array_equal(t1[:, :, 1], t1[:, :, 0])
  np.testing.assert_array_equal(t1[:, :, 2], t1[:, :, 0])
  assert any(not np.array_equal(t2[b, i, 0], t2[b, i, 1]) for b in range(4) for i in range(2))
  # The two first attempts of a prompt are independent samples.
  assert any(not np.array_equal(t1[b, 0, 0], t1[b, 1, 0]) for b in range(4))
  # Log-probs still equal teacher forcing over the assembled sequences.
  seq, valid, turn_masks = assemble_sequences(out, PROMPTS, INSTR)
  tf = sequence_logprobs(model, seq, valid, cfg.temperature)
  for t, turn in enumerate(out.turns):
    np.testing.assert_allclose(
        gather_turn_logprobs(tf, turn_masks[t], turn.tokens.shape[1]), turn.logprobs, atol=1e-5
    )
  assert out.prompt_lens.shape == (24,) and out.cache.lengths.shape == (24,)

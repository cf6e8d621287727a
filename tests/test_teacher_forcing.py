"""Teacher-forced log-probs in chunks of the output layer (the [R, L, V] logits never exist)
equal the all-at-once computation, values and gradients, for every family's output layer
(tied / untied embeddings, Gemma 2's final soft-cap) and at a sampling temperature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from score_jax.model import init_model, tiny
from score_jax.teacher_forcing import sequence_logprobs


def _batch(vocab, rows=3, length=11, seed=0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(0, vocab, (rows, length)), jnp.int32)
  lens = np.array([length, length - 4, 2])[:rows]
  mask = jnp.asarray(np.arange(length)[None] < lens[:, None])
  return tokens, mask


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
@pytest.mark.parametrize("chunk_positions", [1, 7])  # 3 x 10 = 30 positions: 30 or 5 chunks
def test_chunked_logprobs_equal_the_full_logits_path(family, chunk_positions):
  model = init_model(tiny(family), seed=1)
  tokens, mask = _batch(model.cfg.vocab_size)
  graphdef, params = nnx.split(model)
  weights = jax.random.normal(jax.random.key(2), tokens.shape)

  def loss(params, chunk_elements):
    lp = sequence_logprobs(nnx.merge(graphdef, params), tokens, mask, 0.7, chunk_elements)
    return jnp.sum(lp * weights * mask), lp

  full = jax.jit(jax.value_and_grad(lambda p: loss(p, 0), has_aux=True))
  chunked = jax.jit(
      jax.value_and_grad(lambda p: loss(p, chunk_positions * model.cfg.vocab_size), has_aux=True)
  )
  (v_full, lp_full), g_full = full(params)
  (v_chunk, lp_chunk), g_chunk = chunked(params)
  assert lp_full.shape == tokens.shape and np.all(np.asarray(lp_full)[:, 1:] < 0)
  np.testing.assert_allclose(lp_chunk, lp_full, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(v_chunk, v_full, rtol=1e-6, atol=1e-5)
  flat_full, flat_chunk = jax.tree.leaves(g_full), jax.tree.leaves(g_chunk)
  assert len(flat_full) == len(flat_chunk) > 0
  for a, b in zip(flat_full, flat_chunk):  # fp32 sums in another order: ~1e-6 of the scale
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))


def test_chunked_path_never_builds_the_full_logits():
  model = init_model(tiny("gemma3"), seed=0)
  tokens, mask = _batch(model.cfg.vocab_size, rows=2, length=33)
  graphdef, params = nnx.split(model)
  v, d = model.cfg.vocab_size, model.cfg.embed_dim

  def grad_of(chunk_elements):
    f = lambda p: jnp.sum(
        sequence_logprobs(nnx.merge(graphdef, p), tokens, mask, 1.0, chunk_elements)
    )
    return jax.make_jaxpr(jax.grad(f))(params)

  def largest_vocab_array(jaxpr) -> int:  # elements of the largest array with a V axis
    best = 0
    for eqn in _all_eqns(jaxpr.jaxpr):
      for var in eqn.outvars:
        shape = tuple(getattr(var.aval, "shape", ()))
        if v in shape and shape not in ((v, d), (d, v)):  # not the weights or their gradient
          best = max(best, int(np.prod(shape)))
    return best

  assert largest_vocab_array(grad_of(0)) >= 2 * 32 * v  # the reference does build them
  assert largest_vocab_array(grad_of(8 * v)) == 8 * v  # one chunk of 8 positions at a time


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", None)
      if inner is not None:
        yield from _all_eqns(getattr(inner, "jaxpr", inner))

"""Model: KV-cache decoding equals the full forward; config validation names bad fields."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax.model import KVCache, ModelConfig, init_model, tiny

FAMILIES = ["llama", "qwen2", "gemma2", "gemma3"]


def _random_norms(model, seed=0):
  """Non-trivial norm scales / biases so every parameter matters."""
  from flax import nnx

  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [
      l + 0.1 * jax.random.normal(k, l.shape) if l.ndim <= 2 and l.shape[0] < 64 else l
      for l, k in zip(leaves, keys)
  ]
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  return model


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_full_forward(family):
  cfg = tiny(family)
  model = _random_norms(init_model(cfg, seed=1))
  rng = np.random.default_rng(0)
  prompt_lens = np.array([7, 3, 1, 5])
  gen = 9  # > sliding_window (4): the window must bite during decoding.
  b, p = len(prompt_lens), prompt_lens.max()
  prompts = rng.integers(1, cfg.vocab_size, (b, p))
  cont = rng.integers(1, cfg.vocab_size, (b, gen))

  # Right-padded prefill; each row's length advances by its own prompt length only.
  cache = KVCache.init(cfg, b, p + gen)
  prefill_logits, cache = model(jnp.asarray(prompts), cache=cache, num_new=jnp.asarray(prompt_lens))
  np.testing.assert_array_equal(cache.lengths, prompt_lens)
  step = jax.jit(lambda m, t, c: m(t, cache=c))
  step_logits = []
  for t in range(gen):
    logits, cache = step(model, jnp.asarray(cont[:, t : t + 1]), cache)
    step_logits.append(np.asarray(logits[:, 0]))
  np.testing.assert_array_equal(cache.lengths, prompt_lens + gen)

  for r in range(b):
    seq = np.concatenate([prompts[r, : prompt_lens[r]], cont[r]])
    full = np.asarray(model(jnp.asarray(seq)[None]))[0]
    np.testing.assert_allclose(
        np.asarray(prefill_logits[r, : prompt_lens[r]]),
        full[: prompt_lens[r]],
        atol=2e-5,
        rtol=1e-5,
    )
    for t in range(gen):
      np.testing.assert_allclose(
          step_logits[t][r],
          full[prompt_lens[r] + t],
          atol=2e-5,
          rtol=1e-5,
          err_msg=f"{family} row {r} step {t}",
      )


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_padded_full_forward_equals_unpadded(family):
  """Left or right padding does not change the logits of the real tokens."""
  cfg = tiny(family)
  model = init_model(cfg, seed=2)
  seq = jnp.asarray(np.random.default_rng(1).integers(1, cfg.vocab_size, (1, 6)))
  ref = np.asarray(model(seq))[0]
  pad = jnp.zeros((1, 3), jnp.int32)
  right = model(jnp.concatenate([seq, pad], 1), jnp.arange(9)[None] < 6)
  left = model(jnp.concatenate([pad, seq], 1), jnp.arange(9)[None] >= 3)
  np.testing.assert_allclose(np.asarray(right)[0, :6], ref, atol=1e-5)
  np.testing.assert_allclose(np.asarray(left)[0, 3:], ref, atol=1e-5)


def test_chunked_append_after_rows_of_different_length():
  """A multi-token chunk (e.g. the turn-2 instruction) lands right after each row's end."""
  cfg = tiny("gemma3")
  model = init_model(cfg, seed=3)
  rng = np.random.default_rng(2)
  a_lens, c_len = np.array([2, 6]), 4
  a = rng.integers(1, cfg.vocab_size, (2, 6))
  c = rng.integers(1, cfg.vocab_size, (2, c_len))
  cache = KVCache.init(cfg, 2, 16)
  _, cache = model(jnp.asarray(a), cache=cache, num_new=jnp.asarray(a_lens))
  logits, cache = model(jnp.asarray(c), cache=cache)
  for r in range(2):
    seq = np.concatenate([a[r, : a_lens[r]], c[r]])
    full = np.asarray(model(jnp.asarray(seq)[None]))[0]
    np.testing.assert_allclose(np.asarray(logits[r]), full[a_lens[r] :], atol=2e-5)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
def test_logits_at_one_position_per_row_equal_that_row_of_the_full_logits(family):
  """The sampler's prefill asks for the last position only: same logits, same cache."""
  cfg = tiny(family)
  model = init_model(cfg, seed=4)
  rng = np.random.default_rng(5)
  tokens = jnp.asarray(rng.integers(1, cfg.vocab_size, (3, 7)))
  lens = jnp.asarray([7, 3, 1])
  at = jnp.asarray([6, 2, 0])
  all_logits, cache_all = model(tokens, cache=KVCache.init(cfg, 3, 12), num_new=lens)
  one, cache_one = model(tokens, cache=KVCache.init(cfg, 3, 12), num_new=lens, logits_at=at)
  assert one.shape == (3, 1, cfg.vocab_size)
  np.testing.assert_allclose(one[:, 0], all_logits[jnp.arange(3), at], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(cache_all), jax.tree.leaves(cache_one)):
    np.testing.assert_array_equal(a, b)


def test_cache_repeat_shares_prefill():
  cfg = tiny("llama")
  cache = KVCache.init(cfg, 2, 8)
  cache = cache.replace(lengths=jnp.array([3, 5]))
  rep = cache.repeat(3)
  assert rep.k[0].shape == (6, 8, cfg.num_kv_heads, cfg.head_dim)
  np.testing.assert_array_equal(rep.lengths, [3, 3, 3, 5, 5, 5])


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(embed_dim=64, num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (dict(head_dim=15), "head_dim"),
        (dict(embed_dim=64, num_heads=6, num_kv_heads=2, head_dim=None), "num_heads"),
        (dict(num_layers=0), "num_layers"),
        (dict(family="gpt2"), "family"),
        (dict(layer_types=("local",)), "layer_types"),
        (dict(layer_types=("local", "global"), sliding_window=None), "sliding_window"),
        (dict(activation="relu"), "activation"),
        (dict(dtype="float33"), "dtype"),
        (dict(final_logit_softcap=-1.0), "final_logit_softcap"),
    ],
)
def test_inconsistent_config_names_the_field(kw, field):
  with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
    ModelConfig(**kw)

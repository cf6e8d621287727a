r"""The sampler's prefill at Gemma-3-270M size: logits at every position (the previous
version) vs at each row's last position only (now, `Transformer(..., logits_at=)`), in one run.

Both run the same jitted cached forward over a right-padded prompt batch (random weights of
the real architecture, read from the offline Gemma-3-270M GGUF's metadata) and return the
next-token logits [B, V]; they differ only in where the output layer is applied. Printed:
seconds per prefill (median of --repeats, compile excluded), XLA's scratch memory of each
program, and that both give the same next-token logits.

  python benchmarks/prefill.py                      # batch 16, prompt 192
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from score_jax.checkpoints import gguf
from score_jax.model import KVCache, init_model

from timing import median_seconds  # benchmarks/timing.py

_BATCH = flags.DEFINE_integer("batch", 16, "rows")
_PROMPT = flags.DEFINE_integer("prompt", 192, "prompt bucket (tokens)")
_CACHE = flags.DEFINE_integer("cache", 800, "KV cache length (prompt + turns + instruction)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions (median)")


def main(argv):
  del argv
  cfg = gguf.config_from_gguf(gguf.gemma3_270m_path())
  model = init_model(cfg, seed=0)
  graphdef, params = nnx.split(model)
  b, p = _BATCH.value, _PROMPT.value
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(2, cfg.vocab_size, (b, p)), jnp.int32)
  lens = jnp.asarray(rng.integers(p // 2, p + 1, b), jnp.int32)

  def prefill(params, prompts, lens, last_only: bool):
    m = nnx.merge(graphdef, params)
    cache = KVCache.init(cfg, b, _CACHE.value, jnp.float32)
    last = jnp.maximum(lens - 1, 0)
    if last_only:
      logits, cache = m(prompts, cache=cache, num_new=lens, logits_at=last)
      return logits[:, 0], cache.lengths
    logits, cache = m(prompts, cache=cache, num_new=lens)  # [B, P, V]
    return jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], cache.lengths

  print(
      f"Gemma-3-270M shapes ({cfg.num_layers} layers, d={cfg.embed_dim}, vocab"
      f" {cfg.vocab_size}); batch {b}, prompt {p}, cache {_CACHE.value};"
      f" {jax.devices()[0].platform}"
  )
  print("| prefill | s / batch | XLA scratch GiB |")
  print("| --- | ---: | ---: |")
  results = {}
  for name, last_only in (
      ("logits at every position (previous)", False),
      ("last only (now)", True),
  ):
    fn = jax.jit(lambda a, c, d, last_only=last_only: prefill(a, c, d, last_only))
    scratch = fn.lower(params, prompts, lens).compile().memory_analysis().temp_size_in_bytes
    seconds = median_seconds(lambda: fn(params, prompts, lens), _REPEATS.value)
    results[last_only] = (seconds, np.asarray(fn(params, prompts, lens)[0]))
    print(f"| {name} | {seconds:.2f} | {scratch / 2**30:.2f} |")
  (t0, l0), (t1, l1) = results[False], results[True]
  same = np.array_equal(l0.argmax(-1), l1.argmax(-1))
  print(
      f"last-only vs every position: {t0 / t1:.2f}x the speed; greedy next tokens equal:"
      f" {same}; max |logit diff| {np.abs(l0 - l1).max():.2e}"
  )


if __name__ == "__main__":
  app.run(main)

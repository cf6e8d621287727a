r"""Two-turn sampling throughput: ours vs a turn-2 re-prefill (Tunix-style) vs naive recompute.

All three generate the same number of tokens with the same random model (greedy, no stop
token, so every row uses its whole budget) and the same shapes. Compilation is excluded:
each method runs once to warm up, then `--repeats` timed runs.

  * ours: one jitted call; prompt prefilled once, instruction appended in the cache.
  * re-prefill: turn 1 as ours, back to the host, the whole conversation [x1, y1, p] is
    re-tokenised into a fresh cache with a full prefill, then turn 2 is decoded.
  * naive: no cache; every new token recomputes a full forward over the padded sequence.

  python benchmarks/sampler.py                      # the issue's config (GPU-sized)
  python benchmarks/sampler.py --batch=8 --new_tokens=32 --naive_steps=16   # quick on CPU
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from score_jax.model import ModelConfig, init_model
from score_jax.sampler import Sampler, SamplerConfig

from timing import median_seconds  # benchmarks/timing.py

_LAYERS = flags.DEFINE_integer("layers", 4, "transformer layers")
_WIDTH = flags.DEFINE_integer("width", 256, "embed dim")
_BATCH = flags.DEFINE_integer("batch", 32, "rows")
_PROMPT = flags.DEFINE_integer("prompt", 64, "prompt length")
_NEW = flags.DEFINE_integer("new_tokens", 128, "new tokens per turn")
_INSTR = flags.DEFINE_integer("instruction", 32, "instruction length")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions")
_NAIVE_STEPS = flags.DEFINE_integer(
    "naive_steps", 0, "time only this many naive steps and extrapolate (0 = all)"
)


def main(_):
  d = _WIDTH.value
  cfg = ModelConfig(
      family="gemma3",
      vocab_size=4096,
      num_layers=_LAYERS.value,
      embed_dim=d,
      hidden_dim=4 * d,
      num_heads=4,
      num_kv_heads=1,
      head_dim=d // 4,
      norm_offset=True,
      post_norms=True,
      qk_norm=True,
      activation="gelu_tanh",
      tie_embeddings=True,
      scale_embeddings=True,
  )
  model = init_model(cfg)
  params = nnx.state(model)
  b, p, n, il = _BATCH.value, _PROMPT.value, _NEW.value, _INSTR.value
  rng = np.random.default_rng(0)
  prompts = rng.integers(2, cfg.vocab_size, (b, p)).astype(np.int32)
  lens = rng.integers(p // 2, p + 1, b).astype(np.int32)
  instr = rng.integers(2, cfg.vocab_size, (il,)).astype(np.int32)
  common = dict(greedy=True, stop_ids=(-1,), instruction_len=il)
  total_tokens = b * 2 * n
  key = jax.random.key(0)

  # Ours: both turns in one program.
  ours = Sampler(model, SamplerConfig(prompt_buckets=(p,), turn_budgets=(n, n), **common))
  t_ours = median_seconds(
      lambda: ours(params, prompts, lens, instr, None, key).turns[1].tokens, _REPEATS.value
  )

  # Re-prefill: turn 1, host round trip, prefill [x1, y1, p] from scratch, turn 2.
  conv_len = p + n + il
  turn1 = Sampler(model, SamplerConfig(prompt_buckets=(p,), turn_budgets=(n,), **common))
  turn2 = Sampler(model, SamplerConfig(prompt_buckets=(conv_len,), turn_budgets=(n,), **common))

  def reprefill():
    out1 = turn1(params, prompts, lens, None, None, key)
    y1 = np.asarray(out1.turns[0].tokens)
    m1 = np.asarray(out1.turns[0].mask)
    conv = np.zeros((b, conv_len), np.int32)
    conv_lens = np.zeros(b, np.int32)
    for r in range(b):  # what a host-side chat loop does: rebuild each conversation
      seq = np.concatenate([prompts[r, : lens[r]], y1[r][m1[r]], instr])
      conv[r, : len(seq)], conv_lens[r] = seq, len(seq)
    return turn2(params, conv, conv_lens, None, None, key).turns[0].tokens

  t_reprefill = median_seconds(reprefill, _REPEATS.value)

  # Naive: full forward over the whole (padded) sequence for every new token.
  width = p + 2 * n + il
  forward = nnx.jit(lambda m, t, mask: m(t, mask))

  def naive(steps):
    seq = np.zeros((b, width), np.int32)
    seq[:, :p] = prompts
    cur = lens.copy()
    seq_j = jnp.asarray(seq)
    cur_j = jnp.asarray(cur)
    for step in range(steps):
      if step == n:  # append the instruction after each row's turn-1 answer
        idx = cur_j[:, None] + jnp.arange(il)[None]
        seq_j = seq_j.at[jnp.arange(b)[:, None], idx].set(jnp.asarray(instr)[None])
        cur_j = cur_j + il
      mask = jnp.arange(width)[None] < cur_j[:, None]
      logits = forward(model, seq_j, mask)
      tok = jnp.argmax(logits[jnp.arange(b), cur_j - 1], -1)
      seq_j = seq_j.at[jnp.arange(b), cur_j].set(tok)
      cur_j = cur_j + 1
    return seq_j

  naive_steps = _NAIVE_STEPS.value or 2 * n
  t_naive = median_seconds(lambda: naive(naive_steps), 1) * (2 * n) / naive_steps

  print(
      f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; model: "
      f"{cfg.num_layers} layers, d={d}; batch {b}, prompt {p}, turns {n}+{n}, "
      f"instruction {il}"
      + (f"; naive extrapolated from {naive_steps} steps" if naive_steps != 2 * n else "")
  )
  print("| method | seconds / batch | tokens/s | speed-up vs naive |")
  print("| --- | --- | --- | --- |")
  for name, t in [
      ("ours (one program, cache carried into turn 2)", t_ours),
      ("turn-2 re-prefill (Tunix-style)", t_reprefill),
      ("naive full recompute", t_naive),
  ]:
    print(f"| {name} | {t:.3f} | {total_tokens / t:,.0f} | {t_naive / t:.1f}x |")
  print(f"ours vs re-prefill: {t_reprefill / t_ours:.2f}x")


if __name__ == "__main__":
  app.run(main)

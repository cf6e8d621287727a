r"""The RL train step and the reference pass at Gemma-3-270M size: XLA's own memory analysis
and achieved FLOP/s as a fraction of the matmul peak measured in the same process.

Two versions of the step, compiled side by side in one run:
  * full logits (the previous version): the output layer over every position at once, the
    [R, L, V] fp32 logits held for the backward pass (`logits_chunk=0`);
  * chunked (now, the default): the output layer over chunks of positions under
    rematerialisation (`teacher_forcing.LOGITS_CHUNK_ELEMENTS`), so the full logits never exist.

Memory is XLA's `compiled.memory_analysis()` of the step at `--rows` x `--length` (compiled
from shapes only, nothing allocated: the full-logits step would not fit this machine). Speed
is timed at `--time_rows` x `--time_length` (random weights of the real architecture, read
from the offline Gemma-3-270M GGUF's metadata); FLOPs are XLA's cost analysis of the full-logits
step (the useful work: the chunked step's recomputation is not counted as work); the peak is
a large fp32 matmul timed in the same process.

  python benchmarks/train_step.py                        # 8 x 1,024 memory; 4 x 256 timed
  python benchmarks/train_step.py --time_rows=0          # memory analysis only
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from score_jax import losses, optim, teacher_forcing
from score_jax.checkpoints import gguf
from score_jax.model import abstract_model, init_model
from score_jax.rollout import TrainBatch
from score_jax.train_step import TrainState, make_logprob_fn, make_train_step

from timing import median_seconds  # benchmarks/timing.py

_ROWS = flags.DEFINE_integer("rows", 8, "rows of the memory-analysis step")
_LENGTH = flags.DEFINE_integer("length", 1024, "tokens per row of the memory-analysis step")
_TIME_ROWS = flags.DEFINE_integer("time_rows", 4, "rows of the timed step (0: no timing)")
_TIME_LENGTH = flags.DEFINE_integer("time_length", 256, "tokens per row of the timed step")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions (median)")
_PEAK_N = flags.DEFINE_integer("peak_n", 2048, "square matmul size for the measured peak")

CHUNK = teacher_forcing.LOGITS_CHUNK_ELEMENTS
VERSIONS = (("full logits (previous)", 0), ("chunked (now)", CHUNK))  # name, logits_chunk


def _batch(rows: int, length: int, vocab: int, abstract: bool):
  shapes = dict(
      tokens=((rows, length), jnp.int32),
      input_mask=((rows, length), jnp.bool_),
      turn_masks=((2, rows, length), jnp.bool_),
      ref_logprobs=((rows, length), jnp.float32),
      rewards=((2, rows), jnp.float32),
  )
  if abstract:
    return TrainBatch(**{k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()})
  rng = np.random.default_rng(0)
  half = np.arange(length)[None] >= length // 2
  return TrainBatch(
      tokens=jnp.asarray(rng.integers(0, vocab, (rows, length)), jnp.int32),
      input_mask=jnp.ones((rows, length), bool),
      turn_masks=jnp.asarray(
          np.stack([~half & (np.arange(length) > 16), half])
          .repeat(rows, 0)
          .reshape(2, rows, length)
      ),
      ref_logprobs=jnp.asarray(-rng.random((rows, length)) * 5, jnp.float32),
      rewards=jnp.asarray(rng.integers(0, 2, (2, rows)), jnp.float32),
  )


def _parts(rows):
  loss_cfg = losses.LossConfig(stage="stage2", num_samples=min(4, rows))
  optimizer = optim.adam(1e-6, grad_clip=1.0)
  return loss_cfg, optimizer


def _compile(cfg, rows, length, chunk, params, opt_state):
  graphdef = nnx.graphdef(abstract_model(cfg))
  loss_cfg, optimizer = _parts(rows)
  step = jax.jit(make_train_step(graphdef, optimizer, loss_cfg, 1.0, 1, chunk), donate_argnums=0)
  ref = jax.jit(make_logprob_fn(graphdef, 1.0, 1, chunk))
  state = TrainState(params=params, opt_state=opt_state, step=jax.ShapeDtypeStruct((), jnp.int32))
  batch = _batch(rows, length, cfg.vocab_size, abstract=True)
  step_c = step.lower(state, batch).compile()
  ref_c = ref.lower(params, batch.tokens, batch.input_mask).compile()
  return step_c, ref_c


def _gib(n: float) -> str:
  return f"{n / 2**30:.2f}"


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))


def matmul_peak(n: int, repeats: int) -> float:
  """FLOP/s of an [n, n] @ [n, n] fp32 matmul (the best this process gets from XLA)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n**3 / median_seconds(lambda: f(a), max(repeats, 5))


def main(argv):
  del argv
  cfg = gguf.config_from_gguf(gguf.gemma3_270m_path())
  print(
      f"Gemma-3-270M shapes: {cfg.num_layers} layers, d={cfg.embed_dim}, vocab {cfg.vocab_size},"
      f" {jax.device_count()} {jax.devices()[0].platform} device(s)"
  )
  abstract = nnx.state(abstract_model(cfg))
  opt_abstract = jax.eval_shape(_parts(_ROWS.value)[1].init, abstract)

  rows, length = _ROWS.value, _LENGTH.value
  print(f"\nXLA memory analysis, {rows} rows x {length} tokens (compiled, not run):")
  print("| version | step scratch GiB | reference pass scratch GiB |")
  print("| --- | ---: | ---: |")
  previous = None  # the first version's step scratch
  for name, chunk in VERSIONS:
    step_c, ref_c = _compile(cfg, rows, length, chunk, abstract, opt_abstract)
    s, r = step_c.memory_analysis().temp_size_in_bytes, ref_c.memory_analysis().temp_size_in_bytes
    previous = previous or s
    print(f"| {name} | {_gib(s)} ({s / previous:.3f}x the previous) | {_gib(r)} |")

  if not _TIME_ROWS.value:
    return
  rows, length = _TIME_ROWS.value, _TIME_LENGTH.value
  model = init_model(cfg, seed=0)
  graphdef, params = nnx.split(model)
  loss_cfg, optimizer = _parts(rows)
  batch = _batch(rows, length, cfg.vocab_size, abstract=False)
  peak = matmul_peak(_PEAK_N.value, _REPEATS.value)
  print(f"\nmeasured matmul peak: {peak / 1e9:.1f} GFLOP/s ({_PEAK_N.value}^3 fp32)")
  print(f"timed train step, {rows} rows x {length} tokens:")
  print("| version | s / step | useful GFLOP/s | fraction of peak |")
  print("| --- | ---: | ---: | ---: |")
  useful = None
  first = None
  for name, chunk in VERSIONS:
    step = jax.jit(make_train_step(graphdef, optimizer, loss_cfg, 1.0, 1, chunk))
    state = TrainState(params=params, opt_state=optimizer.init(params), step=jnp.int32(0))
    if useful is None:  # the full-logits step's FLOPs: the work, without recomputation
      useful = _flops(step.lower(state, batch).compile())
    seconds = median_seconds(lambda: step(state, batch), _REPEATS.value)
    first = first or seconds
    print(
        f"| {name} | {seconds:.3f} ({first / seconds:.2f}x the previous's speed) |"
        f" {useful / seconds / 1e9:.1f} | {useful / seconds / peak:.2f} |"
    )


if __name__ == "__main__":
  app.run(main)

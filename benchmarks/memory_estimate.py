r"""Per-chip HBM estimates for SCoRe training of Gemma models on TPU slices (arithmetic only).

  python benchmarks/memory_estimate.py                       # configs/gemma_math.py's shapes
  python benchmarks/memory_estimate.py --models=gemma2-2b --chips=8 --batch_size=16 \
      --micro_batch_size=8 --turn_budgets=512,512

What the trainer (score_jax/trainer.py) keeps on each chip, with params/optimizer/reference
sharded over `fsdp = chips / tensor` chips (sharding.DEFAULT_RULES: embed -> fsdp; heads,
kv_heads, mlp, vocab -> tensor; a dimension a mesh axis does not divide stays replicated):

  * params:  the policy, in `--param_dtype` (model.param_dtype; configs/gemma_math.py: fp32).
  * Adam:    optax.adamw's mu and nu have the params' dtype: 2 x params (fp32 -> 8 B/param).
             (So bf16 params mean bf16 Adam state and bf16 updates: at lr 5e-6 most updates
             round away. The bf16 column is for reference; train with fp32 params.)
  * ref:     the frozen reference is `jnp.copy(params)`, so also param_dtype (`--ref_dtype`
             shows what a bf16 copy would save).
  * grads:   fp32 for fp32 params; counted twice (the micro-batch scan carries the
             accumulated gradient while it computes the next micro-batch's).
  * KV:      the sampler keeps its (donated, reused) cache alive between steps: train cache
             rows x S plus the greedy eval sampler's cache (batch_size rows) x S, S = prompt
             bucket + turn 1 + instruction + turn 2, in model.dtype (bf16). Each distinct prompt
             bucket keeps its own cache; this counts only the largest.
  * activations (ROUGH, order of magnitude; no rematerialisation, attention materialises
    [heads, L, L] scores; fp32 logits of at most C = LOGITS_CHUNK_ELEMENTS entries per copy):
      train:    per micro-batch row, saved for the backward pass:
                layers x L x (2 B x (6D + 2NH + 2KH + 4F) + 6 B x N x L),
                plus 3 x min(rows x L x V, C) x 4 B of logits
      ref fwd:  the reference log-prob pass runs per micro-batch, like the train step:
                micro-batch rows x one layer's scores + 2 x min(rows x L x V, C) x 4 B
      sampling: the prefill of batch_size prompts: its cache + one layer's scores
                (N x P x S x 6 B) + the last position's logits (V x 4 B per prompt)
  * total = params + Adam + ref + KV + max(grads + train act., ref fwd, sampling).

The output layer is chunked as the trainer does it (teacher_forcing.LOGITS_CHUNK_ELEMENTS
fp32 entries per copy at most; prefill logits at the last position only): --nochunked_logits
shows the full-logits version. What-if flag for a fix the trainer does not have: --remat
(jax.checkpoint per block: a row keeps L x D per layer plus one layer's activations).

"fits" lists the chips whose HBM x --headroom holds the total (v5e 16 GiB, v4/v6e 32 GiB,
v5p 95 GiB per chip). Real usage differs (XLA fuses, rematerialises, pads); measure with
`jax.local_devices()[0].memory_stats()` on the slice before a long run.
"""

from __future__ import annotations

import dataclasses
import math

from absl import app, flags

from score_jax.model.config import ModelConfig
from score_jax.teacher_forcing import LOGITS_CHUNK_ELEMENTS

# Architectures from the Hugging Face config.json of each checkpoint (text model only):
#   google/gemma-2-2b: hidden_size 2304, num_hidden_layers 26, num_attention_heads 8,
#     num_key_value_heads 4, head_dim 256, intermediate_size 9216, vocab_size 256000.
#   google/gemma-7b (Gemma 1): 3072, 28 layers, 16 heads, 16 kv heads (MHA), head_dim 256,
#     24576, vocab 256000.
#   google/gemma-3-1b-pt: 1152, 26 layers, 4 heads, 1 kv head, head_dim 256, 6912, vocab 262144.
#   google/gemma-3-4b-pt (text_config): 2560, 34 layers, 8 heads, 4 kv heads, head_dim 256,
#     10240. google/gemma-3-12b-pt (text_config): 3840, 48 layers, 16 heads, 8 kv heads,
#     head_dim 256, 15360. (The 4B/12B multimodal checkpoints list vocab 262208 = 262144 text
#     tokens + image tokens; we use 262144.) All tie the output layer to the embedding.
MODELS: dict[str, dict] = {
    "gemma2-2b": dict(
        family="gemma2",
        num_layers=26,
        embed_dim=2304,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        hidden_dim=9216,
        vocab_size=256000,
    ),
    "gemma-7b": dict(
        family="gemma2",
        num_layers=28,
        embed_dim=3072,
        num_heads=16,
        num_kv_heads=16,
        head_dim=256,
        hidden_dim=24576,
        vocab_size=256000,
    ),
    "gemma3-1b": dict(
        family="gemma3",
        num_layers=26,
        embed_dim=1152,
        num_heads=4,
        num_kv_heads=1,
        head_dim=256,
        hidden_dim=6912,
        vocab_size=262144,
    ),
    "gemma3-4b": dict(
        family="gemma3",
        num_layers=34,
        embed_dim=2560,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        hidden_dim=10240,
        vocab_size=262144,
    ),
    "gemma3-12b": dict(
        family="gemma3",
        num_layers=48,
        embed_dim=3840,
        num_heads=16,
        num_kv_heads=8,
        head_dim=256,
        hidden_dim=15360,
        vocab_size=262144,
    ),
}
# Gemma 7B is Gemma 1: no post-norms/soft-caps, but the same parameter shapes as "gemma2"
# with post_norms=False; the family only matters here for the norm count.
_NO_POST_NORMS = {"gemma-7b"}

HBM_GIB = {"v5e": 16, "v4": 32, "v6e": 32, "v5p": 95}
# Slices for the "largest batch that fits" table: (name, chips, HBM GiB per chip).
SLICES = (
    ("v5e-8", 8, 16),
    ("v5e-32", 32, 16),
    ("v6e-8", 8, 32),
    ("v6e-32", 32, 32),
    ("v5p-8", 4, 95),
    ("v5p-32", 16, 95),
)
BYTES = {"float32": 4, "bfloat16": 2}
GIB = 2.0**30

_MODELS = flags.DEFINE_list("models", list(MODELS), f"models, from {list(MODELS)}")
_CHIPS = flags.DEFINE_list(
    "chips", ["4", "8", "16", "32", "64"], "chips per slice (v5p-8/v4-8 = 4 chips; v5e-8/v6e-8 = 8)"
)
_TENSOR = flags.DEFINE_integer("tensor", 1, "mesh.tensor (fsdp = chips / tensor)")
_BATCH = flags.DEFINE_integer("batch_size", 128, "config.batch_size: prompts per step")
_SAMPLES = flags.DEFINE_integer("num_samples", 4, "config.sampler.num_samples")
_MICRO = flags.DEFINE_integer(
    "micro_batch_size", 64, "config.micro_batch_size: rows per micro-batch (0 = all rows)"
)
_PROMPT = flags.DEFINE_integer("prompt_len", 512, "largest of config.sampler.prompt_buckets")
_TURNS = flags.DEFINE_list("turn_budgets", ["768", "768"], "config.sampler.turn_budgets")
_INSTR = flags.DEFINE_integer("instruction_len", 128, "config.sampler.instruction_len")
_PARAM_DTYPE = flags.DEFINE_enum("param_dtype", "float32", list(BYTES), "config.model.param_dtype")
_REF_DTYPE = flags.DEFINE_enum(
    "ref_dtype", "", ["", *BYTES], "reference params dtype ('' = param_dtype, as train.py does)"
)
_ACT_DTYPE = flags.DEFINE_enum(
    "dtype", "bfloat16", list(BYTES), "config.model.dtype: activations and KV cache"
)
_HEADROOM = flags.DEFINE_float("headroom", 0.9, "usable fraction of HBM for 'fits'")
_FIT = flags.DEFINE_bool("fit", True, "also print the largest batch that fits each slice")
_REF_MICRO = flags.DEFINE_bool(
    "ref_micro_batched",
    True,
    "the reference log-prob pass runs per micro-batch (as train.py "
    "does; --noref_micro_batched: all rows at once)",
)
_CHUNKED = flags.DEFINE_bool(
    "chunked_logits",
    True,
    "the output layer in chunks of teacher_forcing.LOGITS_CHUNK_ELEMENTS and prefill logits at"
    " the last position only, as the trainer does (--nochunked_logits: full [L, V] logits)",
)
_REMAT = flags.DEFINE_bool("remat", False, "what if: jax.checkpoint around each block")


@dataclasses.dataclass(frozen=True)
class WhatIf:
  ref_micro_batched: bool = False
  chunked_logits: bool = True
  remat: bool = False


def model_config(name: str) -> ModelConfig:
  m = dict(MODELS[name])
  gemma3 = m["family"] == "gemma3"
  return ModelConfig(
      **m,
      norm_offset=True,
      post_norms=name not in _NO_POST_NORMS,
      qk_norm=gemma3,
      activation="gelu_tanh",
      tie_embeddings=True,
      scale_embeddings=True,
  )


def _shard(shape, axes, fsdp: int, tensor: int) -> int:
  """Elements per chip of one parameter under sharding.DEFAULT_RULES (replicate if no divide)."""
  mesh = {"fsdp": fsdp, "tensor": tensor}
  rule = {
      "vocab": "tensor",
      "embed": "fsdp",
      "mlp": "tensor",
      "heads": "tensor",
      "kv_heads": "tensor",
  }
  used, n = set(), 1
  for dim, ax in zip(shape, axes):
    m = rule.get(ax)
    if m and m not in used and dim % mesh[m] == 0:
      used.add(m)
      dim //= mesh[m]
    n *= dim
  return n


def param_shapes(cfg: ModelConfig):
  """(shape, logical axes) of every parameter, as model/transformer.py creates them."""
  d, f, n, k, h, v = (
      cfg.embed_dim,
      cfg.hidden_dim,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      cfg.vocab_size,
  )
  out = [((v, d), ("vocab", "embed")), ((d,), ("norm",))]
  if not cfg.tie_embeddings:
    out.append(((d, v), ("embed", "vocab")))
  kv = ((d, k, h), ("embed", "kv_heads", "head_dim"))
  layer = [
      ((d, n, h), ("embed", "heads", "head_dim")),
      kv,
      kv,
      ((n, h, d), ("heads", "head_dim", "embed")),
      ((d, f), ("embed", "mlp")),
      ((d, f), ("embed", "mlp")),
      ((f, d), ("mlp", "embed")),
  ]
  layer += [((d,), ("norm",))] * (4 if cfg.post_norms else 2)
  layer += [((h,), ("norm",))] * (2 if cfg.qk_norm else 0)
  return out + layer * cfg.num_layers


@dataclasses.dataclass
class Estimate:
  params: float  # total parameter count
  policy: float  # GiB per chip, each below
  policy_bf16: float
  adam: float
  ref: float
  grads: float
  kv: float
  train_act: float
  ref_fwd: float
  sampling: float

  @property
  def total(self) -> float:
    return (
        self.policy
        + self.adam
        + self.ref
        + self.kv
        + max(self.grads + self.train_act, self.ref_fwd, self.sampling)
    )


@dataclasses.dataclass(frozen=True)
class Shapes:
  batch_size: int  # prompts per step
  num_samples: int
  micro_batch_size: int  # rows; 0 = all
  prompt_len: int
  turn_budgets: tuple[int, ...]
  instruction_len: int

  @property
  def seq_len(self) -> int:  # sampler.cache_len == the training sequence length
    return (
        self.prompt_len
        + sum(self.turn_budgets)
        + self.instruction_len * (len(self.turn_budgets) - 1)
    )


def estimate(
    cfg: ModelConfig,
    chips: int,
    tensor: int,
    s: Shapes,
    param_dtype: str,
    ref_dtype: str,
    act_dtype: str,
    w: WhatIf = WhatIf(),
) -> Estimate:
  if chips % tensor:
    raise ValueError(f"--tensor={tensor} does not divide {chips} chips")
  fsdp = chips // tensor
  shapes = param_shapes(cfg)
  total = sum(math.prod(sh) for sh, _ in shapes)
  per_chip = sum(_shard(sh, ax, fsdp, tensor) for sh, ax in shapes)
  pb, rb, ab = BYTES[param_dtype], BYTES[ref_dtype or param_dtype], BYTES[act_dtype]
  d, f, v, layers = cfg.embed_dim, cfg.hidden_dim, cfg.vocab_size, cfg.num_layers
  # Head-, mlp- and vocab-sized activations are split over the tensor axis when it divides.
  split = lambda x: x / tensor if x % tensor == 0 else x
  nh, kh = split(cfg.num_heads) * cfg.head_dim, split(cfg.num_kv_heads) * cfg.head_dim
  heads, f_loc, v_loc = split(cfg.num_heads), split(f), split(v)
  length = s.seq_len
  rows = s.batch_size * s.num_samples
  rows_chip = rows / fsdp  # batch rows are split over data x fsdp (data = 1 here)
  prompts_chip = s.batch_size / fsdp
  micro_chip = (s.micro_batch_size or rows) / fsdp
  kv_row = layers * length * 2 * kh * ab  # k and v, one row
  scores = lambda q_len, k_len: heads * q_len * k_len * 6  # fp32 softmax out + bf16 probs

  def logits(n_rows, q_len, copies):  # fp32 logits of n_rows x q_len positions, in bytes
    entries = n_rows * q_len * v_loc
    if w.chunked_logits:  # teacher_forcing: at most LOGITS_CHUNK_ELEMENTS entries at a time
      entries = min(entries, LOGITS_CHUNK_ELEMENTS)
    return copies * entries * 4

  layer_act = length * (ab * (6 * d + 2 * nh + 2 * kh + 4 * f_loc) + scores(1, length))
  saved = length * d * ab + layer_act if w.remat else layers * layer_act
  ref_rows = micro_chip if w.ref_micro_batched else rows_chip
  prefill_len = 1 if w.chunked_logits else s.prompt_len  # the sampler: last position only
  return Estimate(
      params=total,
      policy=per_chip * pb / GIB,
      policy_bf16=per_chip * 2 / GIB,
      adam=2 * per_chip * pb / GIB,
      ref=per_chip * rb / GIB,
      grads=2 * per_chip * pb / GIB,
      kv=(rows_chip + prompts_chip) * kv_row / GIB,
      train_act=(micro_chip * saved + logits(micro_chip, length, 3)) / GIB,
      ref_fwd=(ref_rows * scores(length, length) + logits(ref_rows, length, 2)) / GIB,
      sampling=(
          prompts_chip * (kv_row + scores(s.prompt_len, length))
          + logits(prompts_chip, prefill_len, 1)
      )
      / GIB,
  )


def fits(total_gib: float, headroom: float) -> str:
  ok = [c for c, hbm in HBM_GIB.items() if total_gib <= hbm * headroom]
  return " ".join(ok) if ok else "none"


def largest_batch(
    cfg, chips, hbm, tensor, s: Shapes, param_dtype, ref_dtype, act_dtype, headroom, w: WhatIf
) -> str:
  """'batch_size/micro_batch_size' of the largest step that fits, or '-' if none does."""
  fsdp = chips // tensor
  best = "-"
  for k in range(1, 1 + 4096 // fsdp):
    b = k * fsdp  # batch_size must be divisible by data x fsdp
    rows = b * s.num_samples
    # The smallest legal micro-batch: a multiple of num_samples and of fsdp that divides rows.
    step = math.lcm(s.num_samples, fsdp)
    micros = [m for m in range(step, rows + 1, step) if rows % m == 0]
    fitting = [
        m
        for m in micros
        if estimate(
            cfg,
            chips,
            tensor,
            dataclasses.replace(s, batch_size=b, micro_batch_size=m),
            param_dtype,
            ref_dtype,
            act_dtype,
            w,
        ).total
        <= hbm * headroom
    ]
    if not fitting:
      break
    best = f"{b}/{max(fitting)}"
  return best


def main(argv):
  del argv
  s = Shapes(
      batch_size=_BATCH.value,
      num_samples=_SAMPLES.value,
      micro_batch_size=_MICRO.value,
      prompt_len=_PROMPT.value,
      turn_budgets=tuple(int(t) for t in _TURNS.value),
      instruction_len=_INSTR.value,
  )
  pd, rd, ad, t = _PARAM_DTYPE.value, _REF_DTYPE.value, _ACT_DTYPE.value, _TENSOR.value
  w = WhatIf(_REF_MICRO.value, _CHUNKED.value, _REMAT.value)
  what_if = ", ".join(
      f.name
      for f in dataclasses.fields(w)
      if getattr(w, f.name) and f.name not in ("ref_micro_batched", "chunked_logits")
  )
  rows = s.batch_size * s.num_samples
  print(
      f"Per-chip GiB{' (what if: ' + what_if + ')' if what_if else ''}. "
      f"batch_size={s.batch_size} prompts x num_samples={s.num_samples} = "
      f"{rows} rows/step, micro_batch_size={s.micro_batch_size or rows}, "
      f"L = {s.prompt_len}+{'+'.join(map(str, s.turn_budgets))}+{s.instruction_len} = "
      f"{s.seq_len} tokens; param_dtype={pd}, ref={rd or pd}, dtype={ad}; "
      f"mesh fsdp=chips/{t}, tensor={t}. Activation columns are ROUGH.\n"
  )
  print(
      "| model | params | chips | policy | (bf16) | Adam | ref | grads | KV | act. train "
      "| ref fwd | sampling | total | fits |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
  for name in _MODELS.value:
    if name not in MODELS:
      raise app.UsageError(f"--models: unknown model {name!r}; expected some of {list(MODELS)}")
    cfg = model_config(name)
    for chips in map(int, _CHIPS.value):
      if s.batch_size % (chips // t):
        print(
            f"| {name} | | {chips} | batch_size={s.batch_size} is not divisible by "
            f"fsdp={chips // t} | | | | | | | | | | |"
        )
        continue
      e = estimate(cfg, chips, t, s, pd, rd, ad, w)
      cells = [
          e.policy,
          e.policy_bf16,
          e.adam,
          e.ref,
          e.grads,
          e.kv,
          e.train_act,
          e.ref_fwd,
          e.sampling,
          e.total,
      ]
      print(
          f"| {name} | {e.params / 1e9:.2f}B | {chips} | "
          + " | ".join(f"{c:.1f}" for c in cells)
          + f" | {fits(e.total, _HEADROOM.value)} |"
      )
  if _FIT.value:
    print(
        f"\nLargest batch_size/micro_batch_size that fits (total <= {_HEADROOM.value:g} x "
        f"HBM; num_samples={s.num_samples}, L={s.seq_len}, same dtypes; '-' = not even the "
        "smallest):\n"
    )
    print("| model | " + " | ".join(f"{n} ({c}x{h} GiB)" for n, c, h in SLICES) + " |")
    print("|---|" + "---:|" * len(SLICES))
    for name in _MODELS.value:
      cfg = model_config(name)
      cells = [largest_batch(cfg, c, h, t, s, pd, rd, ad, _HEADROOM.value, w) for _, c, h in SLICES]
      print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)

"""The run configuration: defaults for every field, and validation before anything loads.

`configs/*.py` start from `default_config()` and override what they need; the CLI can then
override any field (`--config.loss.alpha=5`). `validate` is called before a model is loaded so
that bad values fail in seconds with the field's name, never deep inside JAX: every field
of `default_config()` is checked (type and range, the enums against the values the code that
consumes it accepts), and a bad one raises `ConfigError` (a ValueError) whose message is one
line, `config.<field>=<value!r>: <why>`. The CLIs (`score_jax.cli`) print that line and exit 2.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import ml_collections

# The legal values of the enum fields. They mirror the modules that consume them (imported
# there, not here: validation loads nothing); tests/test_config_cli.py checks they agree.
STAGES = ("stage1", "stage2", "single_turn")  # score_jax.losses.STAGES
MODEL_SOURCES = ("random", "hf", "gguf", "gemma3_270m", "smollm2", "embedded")
MODEL_FAMILIES = ("gemma3", "gemma2", "llama", "qwen2")  # score_jax.model.config.FAMILIES
CHAT_TEMPLATES = ("gemma", "llama3", "qwen2", "plain")  # score_jax.prompts.FAMILIES
DTYPES = ("float32", "bfloat16", "float16", "float64")  # floating jnp.dtype names
EMBEDDED_FAMILIES = ("pair_sum", "sort")  # score_jax.environments.embedded.FAMILIES
DATASETS = ("math", "math500", "gsm8k", "mbpp", "humaneval", "embedded", "toy")
MBPP_SPLITS = ("prompt", "test", "validation", "train")  # score_jax.data.tasks.MBPP_SPLITS
KL_ESTIMATORS = ("k1", "k3", "sequence")  # score_jax.losses
BASELINES = ("none", "mean", "loo")
AGGREGATIONS = ("token", "sequence")
# config.distributed: score_jax.sharding.maybe_initialize_distributed (case-insensitive).
DISTRIBUTED = ("auto", "true", "false", "1", "0", "yes", "no", "")
MAX_SANDBOX_WORKERS = 64


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Where the policy (and the frozen reference = the same initial weights) comes from.
  c.model = ml_collections.ConfigDict()
  c.model.source = "random"  # one of MODEL_SOURCES
  c.model.path = ""  # HF directory, GGUF file, or embedded base-model directory
  c.model.family = "gemma3"  # random source: which tiny family; chat template otherwise
  c.model.dtype = "float32"  # activations; bfloat16 on TPU
  c.model.param_dtype = "float32"
  c.model.tokenizer = ""  # SentencePiece .model for 'random'/'hf' sources
  c.model.chat_template = ""  # '' = the model family's; or gemma/llama3/qwen2/plain
  # model.source='embedded': the recipe of the tiny SFT base model (built once, cached in
  # model.path or $SCORE_JAX_CACHE/embedded_base-<hash>; see score_jax.embedded_base).
  c.model.base = ml_collections.ConfigDict(
      dict(
          num_layers=2,
          embed_dim=128,
          num_heads=4,
          num_kv_heads=2,
          vocab_size=256,
          noise=0.3,
          habit=0.0,
          habit_above=22,
          dialogue=1,
          preamble=0.0,
          sft_steps=300,
          sft_batch_size=128,
          sft_learning_rate=3e-3,
          sft_seq_len=40,
          seed=0,
      )
  )

  c.task = ml_collections.ConfigDict()
  c.task.name = "embedded"  # one of DATASETS
  c.task.source = ""  # the user's file/directory ('' for humaneval/embedded)
  c.task.train_split = "train"
  c.task.eval_split = "test"
  c.task.eval_source = ""  # '' = task.source
  # '' = train on the tasks read from the files (data.tasks.load_tasks); a directory = build
  # (once; reused while the sources and prompt formats are unchanged) the TFDS array_record
  # dataset of the files there (data.builders) and read both splits from it, each process only
  # its own shard of the training split (through grain, data.pipeline). Dataset tasks only.
  c.task.data_dir = ""
  c.task.num_eval = 256  # held-out problems per periodic evaluation (0 = off)
  # task.name='embedded': pair-sum (score_jax.tasks.pair_sum) or sort (.sort_list) problems.
  c.task.embedded = ml_collections.ConfigDict(
      dict(family="pair_sum", count=6, max_value=20, restate=False)
  )
  # Code tasks (mbpp/humaneval): the sandbox that runs the unit tests. timeout_s: wall-clock
  # limit per program; memory_mb: its address-space limit; workers: programs run in
  # parallel (0 = one per CPU); allow_unconfined: run even where no isolation is available.
  c.task.sandbox = ml_collections.ConfigDict(
      dict(timeout_s=10.0, memory_mb=1024, workers=0, allow_unconfined=False)
  )

  c.sampler = ml_collections.ConfigDict()
  c.sampler.temperature = 1.0
  c.sampler.top_k = 0
  c.sampler.top_p = 1.0
  c.sampler.num_samples = 4  # samples per prompt (the leave-one-out group)
  c.sampler.followups = 1  # second attempts per first attempt (siblings share its cache)
  c.sampler.prompt_buckets = (256, 512)
  c.sampler.turn_budgets = (512, 512)
  c.sampler.instruction_len = 128

  c.loss = ml_collections.ConfigDict()
  c.loss.alpha = 10.0
  c.loss.beta1 = 0.01
  c.loss.beta2 = 0.1
  # Per-token k1 or k3 penalty, or "sequence": each attempt's whole-sequence KL(pi || ref) in its
  # return, the paper's (losses.py docstring).
  c.loss.kl_estimator = "k3"
  c.loss.baseline = "loo"
  c.loss.aggregation = "token"
  # Turn 2's baseline also removes the bonus's -alpha*r1 term (fixed before the second
  # attempt starts): same expected gradient, far less variance (score_jax.losses).
  c.loss.turn2_state_baseline = True
  # True: Stage II keeps beta2 on turn 1 (the paper uses beta1 on both turns; see losses).
  c.loss.anchor_turn1 = False

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 5e-6
  c.optim.warmup_steps = 10
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.grad_clip = 1.0
  c.optim.weight_decay = 0.0

  # The schedule: stages run in order for the given numbers of steps.
  c.stages = ("stage1", "stage2")
  c.stage_steps = (100, 200)
  c.batch_size = 16  # prompts per step (rows = batch_size * num_samples)
  c.micro_batch_size = 0  # rows per gradient micro-batch (0 = all rows at once)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all remaining devices
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.num_devices = 0  # 0: every device; N: the first N (e.g. 1 for a reference run)
  c.distributed = "auto"  # jax.distributed.initialize() on multi-host: auto/true/false

  c.checkpoint_every = 50
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.eval_every = 100
  c.log_every = 1
  c.report = True  # write report.md and plots at the end
  return c


class ConfigError(ValueError):
  """A bad config value. The message is one line: `config.<field>=<value!r>: <why>`."""


def _bad(field: str, value, msg: str):
  raise ConfigError(f"config.{field}={value!r}: {msg}")


_MISSING = object()


def _get(c, field: str):
  v = c
  for k in field.split("."):
    try:
      v = v[k]
    except (KeyError, AttributeError, TypeError):
      v = _MISSING
      break
  if v is _MISSING:
    raise ConfigError(f"config.{field}: missing (start from config_lib.default_config())")
  return v


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _range_msg(lo, hi, lo_open: bool, hi_open: bool) -> str:
  if hi is None:
    if lo == 0:
      return "must be positive" if lo_open else "must be non-negative"
    if lo == 1 and not lo_open:
      return "must be at least 1"
    return f"must be {'>' if lo_open else '>='} {lo}"
  if lo is None:
    return f"must be {'<' if hi_open else '<='} {hi}"
  return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
  if lo is not None and (v <= lo if lo_open else v < lo):
    return False
  if hi is not None and (v >= hi if hi_open else v > hi):
    return False
  return True


def _int(c, field: str, lo=None, hi=None, msg: str | None = None) -> int:
  """An integer (not a bool, not a float) in [lo, hi]."""
  v = _get(c, field)
  if not _is_int(v):
    _bad(field, v, "must be an integer")
  if not _in_range(v, lo, hi, False, False):
    _bad(field, v, msg or _range_msg(lo, hi, False, False))
  return int(v)


def _real(
    c, field: str, lo=None, hi=None, lo_open=False, hi_open=False, msg: str | None = None
) -> float:
  """A number (int or float, not a bool) in the range; NaN is never in range."""
  v = _get(c, field)
  if not _is_real(v):
    _bad(field, v, "must be a number")
  if v != v or not _in_range(v, lo, hi, lo_open, hi_open):  # v != v: NaN
    _bad(field, v, msg or _range_msg(lo, hi, lo_open, hi_open))
  return float(v)


def _bool(c, field: str) -> bool:
  v = _get(c, field)
  if not isinstance(v, bool):
    _bad(field, v, "must be True or False")
  return v


def _str(c, field: str) -> str:
  v = _get(c, field)
  if not isinstance(v, str):
    _bad(field, v, "must be a string")
  return v


def _choice(c, field: str, choices: Sequence[str], what: str = "") -> str:
  v = _str(c, field)
  if v not in choices:
    _bad(field, v, f"{what + '; ' if what else ''}expected one of {tuple(choices)}")
  return v


def _int_tuple(c, field: str, lo: int, what: str) -> tuple[int, ...]:
  """A non-empty tuple of integers >= lo."""
  v = _get(c, field)
  if not isinstance(v, (tuple, list)) or not v:
    _bad(field, v, f"must be a non-empty tuple of {what}")
  v = tuple(v)
  if not all(_is_int(x) and x >= lo for x in v):
    _bad(field, v, f"must be a non-empty tuple of {what}")
  return tuple(int(x) for x in v)


def validate_training(c: ml_collections.ConfigDict) -> None:
  """The rules of a config that trains, beyond `validate` (evaluation may filter tokens).

  The policy gradient scores each sampled token by the policy's own log-prob at the
  temperature; top-k / top-p sample from a truncated, renormalised distribution that the loss
  does not score, so the gradient would be biased (a token drawn with p = 0.64 scored as 0.45).
  """
  why = "training samples from the full distribution at sampler.temperature (the loss scores "
  if _get(c, "sampler.top_k"):
    _bad("sampler.top_k", _get(c, "sampler.top_k"), why + "unfiltered log-probs); use 0")
  if _get(c, "sampler.top_p") != 1.0:
    _bad("sampler.top_p", _get(c, "sampler.top_p"), why + "unfiltered log-probs); use 1.0")


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError (a ValueError) naming the first bad field. Cheap: loads nothing.

  Every field is checked for its type and range first (in `default_config()` order), then
  the rules between fields; `num_devices` (when given) adds the mesh and batch checks."""
  # -- every field on its own ----------------------------------------------------------------
  _int(c, "seed", 0, msg="must be a non-negative integer (it seeds numpy's generators too)")

  source = _choice(c, "model.source", MODEL_SOURCES, "unknown model source")
  path = _str(c, "model.path")
  if source in ("hf", "gguf") and not path:
    _bad("model.path", path, f"model.source={source!r} needs a path")
  _choice(c, "model.family", MODEL_FAMILIES, "unknown model family")
  for f in ("dtype", "param_dtype"):
    _choice(c, f"model.{f}", DTYPES, "not a floating-point dtype name")
  _str(c, "model.tokenizer")
  _choice(
      c,
      "model.chat_template",
      ("",) + CHAT_TEMPLATES,
      "unknown chat template ('' = the model family's)",
  )
  for f in (
      "num_layers",
      "embed_dim",
      "num_heads",
      "num_kv_heads",
      "vocab_size",
      "dialogue",
      "sft_steps",
      "sft_batch_size",
      "sft_seq_len",
  ):
    _int(c, f"model.base.{f}", 1, msg="must be a positive integer")
  for f in ("noise", "habit", "preamble"):
    _real(c, f"model.base.{f}", 0.0, 1.0, msg="a probability, must be in [0, 1]")
  _int(c, "model.base.habit_above", 0)
  _real(c, "model.base.sft_learning_rate", 0.0, lo_open=True)
  _int(c, "model.base.seed", 0, msg="must be a non-negative integer")

  task = _choice(c, "task.name", DATASETS, "unknown dataset")
  for f in ("source", "eval_source", "train_split", "eval_split", "data_dir"):
    v = _str(c, f"task.{f}")
    if task == "mbpp" and f.endswith("split") and v and v not in MBPP_SPLITS:
      _bad(f"task.{f}", v, f"unknown MBPP split; expected one of {MBPP_SPLITS} ('' = none)")
  _int(c, "task.num_eval", 0, msg="must be non-negative (0 = no held-out evaluation)")
  family = _choice(c, "task.embedded.family", EMBEDDED_FAMILIES, "unknown task family")
  count = _int(c, "task.embedded.count", 2, msg="needs at least 2 numbers")
  _int(
      c,
      "task.embedded.max_value",
      count + 1 if family == "pair_sum" else count,
      msg=f"needs at least task.embedded.count={count} distinct values"
      f"{' (and a non-member target)' if family == 'pair_sum' else ''}",
  )
  _bool(c, "task.embedded.restate")
  _real(c, "task.sandbox.timeout_s", 0.0, lo_open=True)
  _int(c, "task.sandbox.memory_mb", 64, msg="must be at least 64 (MB of address space)")
  _int(
      c,
      "task.sandbox.workers",
      0,
      MAX_SANDBOX_WORKERS,
      msg=f"must be in [0, {MAX_SANDBOX_WORKERS}] (0 = one per CPU)",
  )
  _bool(c, "task.sandbox.allow_unconfined")

  _real(
      c,
      "sampler.temperature",
      0.0,
      lo_open=True,
      msg="must be positive (training samples at it; evaluation decodes greedily)",
  )
  _int(c, "sampler.top_k", 0, msg="must be non-negative (0 = off)")
  _real(c, "sampler.top_p", 0.0, 1.0, lo_open=True, msg="must be in (0, 1] (1 = off)")
  num_samples = _int(c, "sampler.num_samples", 1)
  followups = _int(c, "sampler.followups", 1)
  _int_tuple(c, "sampler.prompt_buckets", 1, "positive prompt lengths")
  budgets = _int_tuple(c, "sampler.turn_budgets", 1, "positive token budgets (one per turn)")
  _int(c, "sampler.instruction_len", 1, msg="must be a positive integer")

  for f in ("alpha", "beta1", "beta2"):
    _real(c, f"loss.{f}", 0.0)
  _choice(c, "loss.kl_estimator", KL_ESTIMATORS)
  baseline = _choice(c, "loss.baseline", BASELINES)
  _choice(c, "loss.aggregation", AGGREGATIONS)
  _bool(c, "loss.turn2_state_baseline")
  _bool(c, "loss.anchor_turn1")

  _real(c, "optim.learning_rate", 0.0, lo_open=True)
  _int(c, "optim.warmup_steps", 0)
  for f in ("b1", "b2"):
    _real(c, f"optim.{f}", 0.0, 1.0, hi_open=True)
  _real(c, "optim.grad_clip", 0.0, msg="must be non-negative (0 = no clipping)")
  _real(c, "optim.weight_decay", 0.0)

  stages = _get(c, "stages")
  if not isinstance(stages, (tuple, list)) or not stages:
    _bad("stages", stages, f"needs a tuple of at least one stage of {STAGES}")
  stages = tuple(stages)
  for s in stages:
    if s not in STAGES:
      _bad("stages", stages, f"unknown stage {s!r}; expected some of {STAGES}")
  steps = _get(c, "stage_steps")
  if not isinstance(steps, (tuple, list)) or not all(_is_int(n) and n >= 0 for n in steps):
    _bad("stage_steps", steps, "must be a tuple of non-negative step counts")
  steps = tuple(steps)
  batch_size = _int(c, "batch_size", 1, msg="must be positive")
  micro = _int(c, "micro_batch_size", 0, msg="must be non-negative")

  mesh_sizes = {}
  for a in ("data", "fsdp", "tensor"):
    v = _int(c, f"mesh.{a}")
    if v == 0 or v < -1:
      _bad(f"mesh.{a}", v, "must be positive or -1 (all remaining devices)")
    mesh_sizes[a] = v
  _int(c, "mesh.num_devices", 0, msg="must be >= 0 (0 = all devices)")
  dist = _get(c, "distributed")
  if not isinstance(dist, bool) and not (
      isinstance(dist, str) and dist.strip().lower() in DISTRIBUTED
  ):
    _bad("distributed", dist, "expected 'auto', 'true' or 'false'")

  for f in ("checkpoint_every", "eval_every", "log_every"):
    _int(c, f, 0, msg="must be non-negative (0 = never)")
  _int(c, "keep_checkpoints", 1, msg="must be at least 1")
  _bool(c, "async_checkpoints")
  _bool(c, "report")

  # -- rules between fields ------------------------------------------------------------------
  b = c.model.base
  if b.embed_dim % b.num_heads:
    _bad("model.base.num_heads", b.num_heads, f"does not divide embed_dim={b.embed_dim}")
  if (b.embed_dim // b.num_heads) % 2:
    _bad(
        "model.base.embed_dim",
        b.embed_dim,
        f"embed_dim / num_heads (= head_dim {b.embed_dim // b.num_heads}) must be even "
        "for rotary embeddings",
    )
  if b.num_heads % b.num_kv_heads:
    _bad("model.base.num_kv_heads", b.num_kv_heads, f"must divide num_heads={b.num_heads}")
  if b.habit and family != "pair_sum":
    _bad(
        "model.base.habit",
        b.habit,
        "only the pair_sum family has that slip " f"(task.embedded.family={family!r}); set it to 0",
    )

  if "single_turn" in stages and len(stages) > 1:
    _bad("stages", stages, "single_turn is a baseline of its own; don't mix it with stages")
  if len(steps) != len(stages):
    _bad("stage_steps", steps, f"needs one non-negative step count per stage {stages}")
  single = stages == ("single_turn",)
  if single and c.loss.alpha:
    _bad(
        "loss.alpha",
        c.loss.alpha,
        "reward shaping needs two attempts; set loss.alpha=0 for single-turn RL",
    )
  if baseline == "loo" and num_samples < 2:
    _bad(
        "sampler.num_samples",
        num_samples,
        "the leave-one-out baseline needs at least 2 samples per prompt",
    )
  turns = 1 if single else 2
  if len(budgets) < turns:
    _bad("sampler.turn_budgets", budgets, f"needs {turns} budgets")
  if followups > 1 and turns < 2:
    _bad("sampler.followups", followups, "needs two turns (single_turn has one)")
  group = num_samples * (followups if turns > 1 else 1)
  rows = batch_size * group
  if micro and (rows % micro or micro % group):
    _bad(
        "micro_batch_size",
        micro,
        f"must divide the {rows} rows per step and be a multiple of the {group} rows "
        "of one prompt (sampler.num_samples x sampler.followups; groups stay whole)",
    )
  fill = [a for a, v in mesh_sizes.items() if v == -1]
  if len(fill) > 1:
    _bad(f"mesh.{fill[1]}", -1, f"only one mesh axis may be -1 (mesh.{fill[0]} is too)")

  # -- the devices ---------------------------------------------------------------------------
  if num_devices is not None and c.mesh.num_devices:
    if c.mesh.num_devices > num_devices:
      _bad("mesh.num_devices", c.mesh.num_devices, f"only {num_devices} devices exist")
    num_devices = c.mesh.num_devices
  if num_devices is not None:
    fixed = 1
    for v in mesh_sizes.values():
      fixed *= v if v > 0 else 1
    if num_devices % fixed:
      _bad("mesh", dict(mesh_sizes), f"does not fit {num_devices} devices")
    data = mesh_sizes["data"] if mesh_sizes["data"] > 0 else num_devices // fixed
    fsdp = mesh_sizes["fsdp"] if mesh_sizes["fsdp"] > 0 else num_devices // fixed
    data_par = data * fsdp  # the prompts of a step are split over data x fsdp
    if batch_size % data_par:
      _bad(
          "batch_size",
          batch_size,
          f"must be divisible by the data-parallel size {data_par} (mesh data x fsdp)",
      )
    if not fill and fixed != num_devices:
      _bad(
          "mesh",
          dict(mesh_sizes),
          f"uses {fixed} of the {num_devices} devices; set one " "axis to -1 or mesh.num_devices",
      )


def leaf_fields(c: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """{'sampler.top_p': 1.0, ...}: every leaf field of a config, dotted."""
  out = {}
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(leaf_fields(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out

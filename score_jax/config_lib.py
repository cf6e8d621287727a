"""The run configuration: defaults for every field, and validation before anything loads.

`configs/*.py` start from `default_config()` and override what they need; the CLI can then
override any field (`--config.loss.alpha=5`). `validate` is called before a model is loaded so
that bad values fail in seconds with the field's name, never deep inside JAX.
"""

from __future__ import annotations

import ml_collections

STAGES = ("stage1", "stage2", "single_turn")
MODEL_SOURCES = ("random", "hf", "gguf", "gemma3_270m", "embedded")
EMBEDDED_FAMILIES = ("pair_sum", "sort")  # score_jax.tasks.embedded.FAMILIES
DATASETS = ("math", "math500", "gsm8k", "mbpp", "humaneval", "embedded", "toy")


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
  # model.path or $SCORE_JAX_CACHE/embedded_base-<hash>; see score_jax.tasks.embedded).
  c.model.base = ml_collections.ConfigDict(dict(
      num_layers=2, embed_dim=128, num_heads=4, num_kv_heads=2, vocab_size=256, noise=0.3,
      habit=0.0, habit_above=22, dialogue=1, preamble=0.0,
      sft_steps=300, sft_batch_size=128, sft_learning_rate=3e-3, sft_seq_len=40, seed=0))

  c.task = ml_collections.ConfigDict()
  c.task.name = "embedded"  # one of DATASETS
  c.task.source = ""  # the user's file/directory ('' for humaneval/embedded)
  c.task.train_split = "train"
  c.task.eval_split = "test"
  c.task.eval_source = ""  # '' = task.source
  c.task.num_eval = 256  # held-out problems per periodic evaluation (0 = off)
  # task.name='embedded': pair-sum (score_jax.tasks.pair_sum) or sort (.sort_list) problems.
  c.task.embedded = ml_collections.ConfigDict(dict(family="pair_sum", count=6, max_value=20,
                                                  restate=False))

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


def _bad(field: str, value, msg: str):
  raise ValueError(f"config.{field}={value!r}: {msg}")


def validate(c: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ValueError naming the first bad field. Cheap: loads nothing."""
  if c.model.source not in MODEL_SOURCES:
    _bad("model.source", c.model.source, f"unknown model source; expected one of {MODEL_SOURCES}")
  if c.model.source in ("hf", "gguf", "embedded") and not c.model.path and \
      c.model.source != "embedded":
    _bad("model.path", c.model.path, f"model.source={c.model.source!r} needs a path")
  if c.task.name not in DATASETS:
    _bad("task.name", c.task.name, f"unknown dataset; expected one of {DATASETS}")
  if c.task.name == "embedded" and c.task.embedded.family not in EMBEDDED_FAMILIES:
    _bad("task.embedded.family", c.task.embedded.family,
         f"unknown task family; expected one of {EMBEDDED_FAMILIES}")
  stages = tuple(c.stages)
  steps = tuple(c.stage_steps)
  if not stages:
    _bad("stages", stages, "needs at least one stage")
  for s in stages:
    if s not in STAGES:
      _bad("stages", stages, f"unknown stage {s!r}; expected some of {STAGES}")
  if "single_turn" in stages and len(stages) > 1:
    _bad("stages", stages, "single_turn is a baseline of its own; don't mix it with stages")
  if len(steps) != len(stages) or any(int(s) < 0 for s in steps):
    _bad("stage_steps", steps, f"needs one non-negative step count per stage {stages}")
  for f in ("beta1", "beta2", "alpha"):
    v = c.loss[f]
    if v < 0:
      _bad(f"loss.{f}", v, "must be non-negative")
  if stages == ("single_turn",) and c.loss.alpha:
    _bad("loss.alpha", c.loss.alpha,
         "reward shaping needs two attempts; set loss.alpha=0 for single-turn RL")
  if c.loss.kl_estimator not in ("k1", "k3"):
    _bad("loss.kl_estimator", c.loss.kl_estimator, "expected 'k1' or 'k3'")
  if c.loss.baseline not in ("none", "mean", "loo"):
    _bad("loss.baseline", c.loss.baseline, "expected 'none', 'mean' or 'loo'")
  if c.loss.baseline == "loo" and c.sampler.num_samples < 2:
    _bad("sampler.num_samples", c.sampler.num_samples,
         "the leave-one-out baseline needs at least 2 samples per prompt")
  if c.loss.aggregation not in ("token", "sequence"):
    _bad("loss.aggregation", c.loss.aggregation, "expected 'token' or 'sequence'")
  if c.optim.learning_rate <= 0:
    _bad("optim.learning_rate", c.optim.learning_rate, "must be positive")
  if c.optim.warmup_steps < 0:
    _bad("optim.warmup_steps", c.optim.warmup_steps, "must be non-negative")
  if c.batch_size < 1:
    _bad("batch_size", c.batch_size, "must be positive")
  turns = 1 if stages == ("single_turn",) else 2
  if len(c.sampler.turn_budgets) < turns:
    _bad("sampler.turn_budgets", tuple(c.sampler.turn_budgets), f"needs {turns} budgets")
  if c.sampler.followups < 1:
    _bad("sampler.followups", c.sampler.followups, "must be at least 1")
  if c.sampler.followups > 1 and turns < 2:
    _bad("sampler.followups", c.sampler.followups, "needs two turns (single_turn has one)")
  group = c.sampler.num_samples * (c.sampler.followups if turns > 1 else 1)
  rows = c.batch_size * group
  if c.micro_batch_size:
    if rows % c.micro_batch_size or c.micro_batch_size % group:
      _bad("micro_batch_size", c.micro_batch_size,
           f"must divide the {rows} rows per step and be a multiple of the {group} rows "
           "of one prompt (sampler.num_samples x sampler.followups; groups stay whole)")
  mesh_sizes = {a: int(c.mesh[a]) for a in ("data", "fsdp", "tensor")}
  for a, v in mesh_sizes.items():
    if v == 0 or v < -1:
      _bad(f"mesh.{a}", v, "must be positive or -1 (all remaining devices)")
  if c.mesh.num_devices < 0:
    _bad("mesh.num_devices", c.mesh.num_devices, "must be >= 0 (0 = all devices)")
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
    data_par = data * (mesh_sizes["fsdp"] if mesh_sizes["fsdp"] > 0 else 1)
    if c.batch_size % data_par:
      _bad("batch_size", c.batch_size,
           f"must be divisible by the data-parallel size {data_par} (mesh data x fsdp)")
  for f in ("checkpoint_every", "eval_every", "log_every"):
    if c[f] < 0:
      _bad(f, c[f], "must be non-negative")

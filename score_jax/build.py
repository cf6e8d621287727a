"""Config -> parts: the one place where a run's ConfigDict becomes the dataclasses and
objects the rest of the package takes (sampler settings, loss settings, optimizer).

The start of the composition root: `Trainer`, `evaluate` and the benchmarks build these
parts here instead of each reading `config.sampler` / `config.loss` / `config.optim`.
"""

from __future__ import annotations

import ml_collections
import optax

from score_jax import losses, optim as optim_lib, sampler as sampler_lib


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

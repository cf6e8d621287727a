r"""The SCoRe objective as pure functions: REINFORCE with a baseline plus per-token KL.

Two steps, so that gradient accumulation over micro-batches is exact:

1. `turn_advantages(rewards, cfg)` (once per batch, no parameters): each attempt's reward
   for its own tokens (credit with gamma = 0, as in the Stage I / Stage II objectives of
   Kumar et al. (2024)), shaped and baselined.
     stage1       turn 1: no reward term (only the strong KL beta2)  turn 2: r2
     stage2       turn 1: r1                                         turn 2: r2 + alpha (r2 - r1)
     single_turn  turn 1: r1
   minus a baseline over the same turn's rewards: 'none', 'mean' (batch mean) or 'loo'
   (leave-one-out mean of the other samples of the same prompt; rows are prompt-major;
   with follow-up groups, a second attempt's leave-one-out group is its siblings, the
   second attempts that share its first attempt).
   With `turn2_state_baseline` (default), turn 2's baseline also holds the bonus's
   -alpha * r1 term, which the second attempt cannot change (see `turn_advantages`).

2. `policy_loss(logp, ref_logp, turn_masks, advantages, cfg)` (per micro-batch, under
   `jax.grad`): per token
     loss = -sg(A_turn) * logp + beta_turn * kl(logp, ref_logp)
   with beta per turn: stage1 (beta2, beta1); stage2 and single_turn beta1 on every turn
   (stage2 with `anchor_turn1`: (beta2, beta1), turn 1 held as in Stage I).
   Returned as (sum, count) over tokens ('token' aggregation) or over attempts ('sequence':
   each attempt's token mean), so sum(sums) / sum(counts) over micro-batches equals the
   full-batch loss.

KL estimators (John Schulman, "Approximating KL divergence"), d = ref_logp - logp:
  k1 = -d           value: unbiased for KL(pi || ref). Used as a score-function penalty:
                    the term's gradient is k1 * grad(logp), whose expectation is the exact
                    per-token grad KL(pi || ref) (differentiating k1 itself has zero mean).
  k3 = e^d - d - 1  value: unbiased and >= 0. Differentiated directly (as in GRPO/Tunix):
                    its expected gradient is grad KL(ref || pi), which also anchors pi.
Either way the penalty is a loss term of the attempt's own tokens, never folded into another
attempt's reward, so Stage I anchors the first attempt, as the Stage I objective of Kumar et
al. (2024) asks (its beta2 KL is on the first attempt's own tokens). Folding that KL into a
reward without gradient is a pitfall seen in some public re-implementations of SCoRe.

  sequence          the paper's penalty: beta * KL(pi(.|x) || ref(.|x)) of each attempt as a
                    whole (Kumar et al., 2024, Eqs. 3-4). The attempt's log-ratio
                    sum_t (logp - ref_logp) (from the sampler, at sampling time) is folded into
                    that attempt's own return before the baseline: A = r - beta * log-ratio -
                    b. Its expected gradient is exactly grad of E[r] - beta * KL(pi || ref) of
                    the sequence; per-token k1 or k3 terms miss how an earlier token changes the
                    later tokens' distributions (and k3's is the reverse KL's). Only the
                    attempt's own KL enters its return (gamma = 0, as the rewards), so Stage I's
                    beta2 still acts on the first attempt alone.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

Array = jax.Array

STAGES = ("stage1", "stage2", "single_turn")
KL_ESTIMATORS = ("k1", "k3", "sequence")
BASELINES = ("none", "mean", "loo")
AGGREGATIONS = ("token", "sequence")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Objective settings (see the module docstring). Validated on construction."""

  stage: str = "stage2"
  alpha: float = 10.0
  beta1: float = 0.01
  beta2: float = 0.1
  kl_estimator: str = "k3"
  baseline: str = "loo"
  num_samples: int = 4
  num_followups: int = 1
  aggregation: str = "token"
  turn2_state_baseline: bool = True
  # Stage II keeps Stage I's beta2 on turn 1 (not the paper: it uses beta1 on both turns).
  # A tiny model's first attempt otherwise drifts and stops writing the check that makes
  # its mistakes visible to turn 2 (WORKSPACE.md, "The embedded task").
  anchor_turn1: bool = False

  def __post_init__(self):
    def bad(field, msg):
      raise ValueError(f"LossConfig.{field}={getattr(self, field)!r}: {msg}")

    if self.stage not in STAGES:
      bad("stage", f"unknown stage; expected one of {STAGES}")
    for f in ("alpha", "beta1", "beta2"):
      if getattr(self, f) < 0:
        bad(f, "must be non-negative")
    if self.stage == "single_turn" and self.alpha:
      bad("alpha", "reward shaping needs two attempts; use alpha=0 with single_turn")
    if self.kl_estimator not in KL_ESTIMATORS:
      bad("kl_estimator", f"expected one of {KL_ESTIMATORS}")
    if self.baseline not in BASELINES:
      bad("baseline", f"expected one of {BASELINES}")
    if self.aggregation not in AGGREGATIONS:
      bad("aggregation", f"expected one of {AGGREGATIONS}")
    if self.num_samples < 1 or (self.baseline == "loo" and self.num_samples < 2):
      bad("num_samples", "must be >= 1 (>= 2 for the leave-one-out baseline)")
    if self.num_followups < 1 or (self.num_followups > 1 and self.num_turns < 2):
      bad("num_followups", "must be >= 1, and 1 for single-turn RL")

  @property
  def num_turns(self) -> int:
    return 1 if self.stage == "single_turn" else 2

  @property
  def kl_coefs(self) -> tuple[float, ...]:
    """beta of each turn's KL term."""
    if self.stage == "stage1" or (self.stage == "stage2" and self.anchor_turn1):
      return (self.beta2, self.beta1)
    return (self.beta1,) * self.num_turns


def shaped_rewards(rewards: Array, cfg: LossConfig) -> Array:
  """[T, R] rewards of the attempts -> [T, R] reward that each attempt's tokens receive."""
  r1 = rewards[0]
  if cfg.stage == "single_turn":
    return r1[None]
  r2 = rewards[1]
  if cfg.stage == "stage1":
    return jnp.stack([jnp.zeros_like(r1), r2])
  return jnp.stack([r1, r2 + cfg.alpha * (r2 - r1)])


def baseline(r: Array, kind: str, group: int, block: int = 1) -> Array:
  """Baseline of each row's reward r [R].

  Rows come in groups of `group` (the samples of one prompt), made of blocks of `block`
  rows that share one attempt (follow-up siblings repeat their first attempt's reward).
  'loo' is the mean reward of the *other* blocks of the same group."""
  if kind == "none":
    return jnp.zeros_like(r)
  if kind == "mean":
    return jnp.broadcast_to(jnp.mean(r), r.shape)
  if kind == "loo":
    g = r.reshape(-1, group // block, block)
    others = g.sum((1, 2), keepdims=True) - g.sum(2, keepdims=True)
    return jnp.broadcast_to(others / ((group // block - 1) * block), g.shape).reshape(r.shape)
  raise ValueError(f"baseline={kind!r}: expected one of {BASELINES}")


def _groups(cfg: "LossConfig", turn: int) -> tuple[int, int]:
  """(group, block) of `baseline` for a turn's rewards."""
  n, m = cfg.num_samples, cfg.num_followups
  if turn == 0:
    return n * m, m  # other first attempts of the same prompt
  return (m, 1) if m > 1 else (n, 1)  # siblings sharing the first attempt, if any


def turn_advantages(rewards: Array, cfg: LossConfig, log_ratios: Array | None = None) -> Array:
  """[T, R] binary rewards -> [T, R] advantages (shaped reward minus baseline).

  With the per-token KL estimators, Stage I's first attempt gets advantage 0: it is trained
  only through its KL term. With `kl_estimator='sequence'`, `log_ratios` [T, R] (each
  attempt's sum_t logp - ref_logp, constants) are folded into the returns as -beta_turn *
  log-ratio before the baseline; Stage I's first attempt's return is then that term alone."""
  rewards = jnp.asarray(rewards, jnp.float32)
  chex.assert_rank(rewards, 2)  # [T, R]
  sequence_kl = cfg.kl_estimator == "sequence"
  if sequence_kl and log_ratios is None:
    raise ValueError("kl_estimator='sequence' needs the attempts' log_ratios [T, R]")
  if rewards.shape[0] < cfg.num_turns:
    raise ValueError(
        f"{cfg.stage} needs rewards of {cfg.num_turns} turns, got " f"{rewards.shape[0]}"
    )
  group = cfg.num_samples * cfg.num_followups
  if rewards.shape[1] % group:
    raise ValueError(
        f"{rewards.shape[1]} rows are not groups of num_samples x " f"num_followups = {group}"
    )
  shaped = shaped_rewards(rewards, cfg)
  if cfg.stage == "stage2" and cfg.turn2_state_baseline:
    # r^2 = (1 + alpha) r2 - alpha r1. The -alpha r1 part is fixed before the second
    # attempt starts (y1 is in its context): as part of turn 2's baseline it changes no
    # expected gradient, and it removes variance that grows with alpha^2.
    shaped = shaped.at[1].add(cfg.alpha * rewards[0])
  if sequence_kl:
    ratios = jax.lax.stop_gradient(jnp.asarray(log_ratios, jnp.float32))[: cfg.num_turns]
    chex.assert_equal_shape([ratios, shaped])
    shaped = shaped - jnp.asarray(cfg.kl_coefs, jnp.float32)[:, None] * ratios
  adv = jnp.stack([s - baseline(s, cfg.baseline, *_groups(cfg, t)) for t, s in enumerate(shaped)])
  if cfg.stage == "stage1" and not sequence_kl:
    adv = adv.at[0].set(0.0)
  return adv


def kl_value(logp: Array, ref_logp: Array, estimator: str) -> Array:
  """Per-token estimate of KL(pi || ref) from the sampled tokens' log-probs (the sequence
  estimator reports k1: summed over an attempt, it is the log-ratio its return holds)."""
  d = ref_logp - logp
  if estimator in ("k1", "sequence"):
    return -d
  if estimator == "k3":
    return jnp.expm1(d) - d
  raise ValueError(f"kl_estimator={estimator!r}: expected one of {KL_ESTIMATORS}")


def kl_term(logp: Array, ref_logp: Array, estimator: str) -> Array:
  """The differentiable per-token penalty; its value equals `kl_value`.

  k1: sg(k1) * (1 + logp - sg(logp)): gradient k1 * grad(logp) (score function).
  k3: k3 itself. sequence: no loss term (the KL is in the attempt's return)."""
  if estimator == "sequence":
    return jnp.zeros_like(logp)
  value = kl_value(logp, ref_logp, estimator)
  if estimator == "k1":
    value = jax.lax.stop_gradient(value)
    return value * (1.0 + logp - jax.lax.stop_gradient(logp))
  return value


def policy_loss(
    logp: Array, ref_logp: Array, turn_masks: Array, advantages: Array, cfg: LossConfig
):
  """(loss_sum, count, metrics) of one (micro-)batch.

  Args:
    logp: fp32 [R, L] policy log-prob of each token given its prefix (or [T, R, L]).
    ref_logp: the frozen reference's, same shape (no gradient flows into it).
    turn_masks: [T, R, L] the tokens each turn generated (T >= cfg.num_turns).
    advantages: [T, R] from `turn_advantages` (treated as constants).
  Returns:
    loss_sum, count: scalars; the loss is loss_sum / count over all micro-batches.
    metrics: per-turn sums (`kl_t1_sum`, `pg_t1_sum`, ...) and token counts (`tokens_t1`),
      summed over micro-batches and turned into per-token means by `finalize_metrics`.
  """
  t = cfg.num_turns
  chex.assert_rank([turn_masks, advantages], [3, 2])  # [T, R, L], [T, R]
  chex.assert_equal_shape([logp, ref_logp])
  chex.assert_equal(logp.shape[-2:], turn_masks.shape[1:])
  chex.assert_equal(advantages.shape[1], turn_masks.shape[1])
  masks = jnp.asarray(turn_masks)[:t].astype(jnp.float32)
  logp = jnp.broadcast_to(logp.astype(jnp.float32), masks.shape)
  ref_logp = jax.lax.stop_gradient(jnp.broadcast_to(ref_logp.astype(jnp.float32), masks.shape))
  adv = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32)[:t])
  betas = jnp.asarray(cfg.kl_coefs, jnp.float32)[:, None, None]
  pg = -adv[:, :, None] * logp
  kl = kl_term(logp, ref_logp, cfg.kl_estimator)
  per_token = (pg + betas * kl) * masks  # sequence: the KL is in `advantages` already
  tokens = masks.sum(-1)  # [T, R]
  if cfg.aggregation == "token":
    loss_sum, count = per_token.sum(), masks.sum()
  else:
    loss_sum = (per_token.sum(-1) / jnp.maximum(tokens, 1.0)).sum()
    count = jnp.float32(tokens.size)
  kl_v = jax.lax.stop_gradient(kl_value(logp, ref_logp, cfg.kl_estimator)) * masks
  metrics = {}
  for i in range(t):
    metrics[f"kl_t{i + 1}_sum"] = kl_v[i].sum()
    metrics[f"pg_t{i + 1}_sum"] = jax.lax.stop_gradient(pg[i] * masks[i]).sum()
    metrics[f"tokens_t{i + 1}"] = tokens[i].sum()
  return loss_sum, count, metrics


def finalize_metrics(sums: dict[str, Array]) -> dict[str, Array]:
  """Summed `policy_loss` metrics -> per-token means {'kl_t1': ..., 'pg_t1': ...}."""
  out = {}
  for k, v in sums.items():
    if k.endswith("_sum"):
      name = k[: -len("_sum")]
      out[name] = v / jnp.maximum(sums["tokens_" + name.split("_")[-1]], 1.0)
  return out

"""The SCoRe objective against hand-computed values on small arrays."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses

LC = losses.LossConfig


def test_leave_one_out_baseline():
  r = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # two prompts x three samples
  b = losses.baseline(r, "loo", 3)
  np.testing.assert_allclose(b, [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(losses.baseline(r, "mean", 3), np.full(6, 4 / 6))
  np.testing.assert_allclose(losses.baseline(r, "none", 3), np.zeros(6))


def test_shaping_bonus_signs():
  # rows: i->c, c->i, c->c, i->i
  r = jnp.array([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
  cfg = LC(stage="stage2", alpha=10.0, baseline="none", num_samples=1)
  shaped = losses.shaped_rewards(r, cfg)
  np.testing.assert_allclose(shaped[0], [0, 1, 1, 0])  # turn 1: its own reward
  np.testing.assert_allclose(shaped[1], [1 + 10, 0 - 10, 1, 0])  # fixing paid, breaking punished
  # Stage I: only the second attempt is rewarded.
  s1 = losses.shaped_rewards(r, LC(stage="stage1", baseline="none", num_samples=1))
  np.testing.assert_allclose(s1, [[0, 0, 0, 0], [1, 0, 1, 0]])
  single = losses.shaped_rewards(
      r, LC(stage="single_turn", alpha=0.0, baseline="none", num_samples=1)
  )
  np.testing.assert_allclose(single, [[0, 1, 1, 0]])


def test_advantages_use_the_turns_own_group():
  r = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]])  # 2 prompts x 2 samples
  plain = LC(stage="stage2", alpha=2.0, baseline="loo", num_samples=2, turn2_state_baseline=False)
  adv = losses.turn_advantages(r, plain)
  # turn 2 shaped: [1, 1+2, 0, 1+2] -> LOO within pairs: [1-3, 3-1, 0-3, 3-0]
  np.testing.assert_allclose(adv[0], [1, -1, 0, 0])
  np.testing.assert_allclose(adv[1], [-2, 2, -3, 3])
  # Default: the -alpha*r1 part (fixed before turn 2) joins turn 2's baseline:
  # (1 + alpha) r2 = [3, 3, 0, 3] -> LOO: [0, 0, -3, 3]; turn 1 unchanged.
  adv = losses.turn_advantages(r, dataclasses.replace(plain, turn2_state_baseline=True))
  np.testing.assert_allclose(adv[0], [1, -1, 0, 0])
  np.testing.assert_allclose(adv[1], [0, 0, -3, 3])
  adv1 = losses.turn_advantages(r, LC(stage="stage1", baseline="loo", num_samples=2))
  np.testing.assert_allclose(adv1[0], 0.0)  # Stage I never rewards the first attempt


def test_state_baseline_keeps_the_expected_turn2_gradient():
  # For a fixed first attempt, the shaped and the state-baselined advantages differ by a
  # per-row constant (-alpha*r1 and the baseline), so their turn-2 gradients agree in
  # expectation: check E[A * (onehot(y2) - p)] over a two-action turn-2 policy, exactly.
  p = 0.3  # P(y2 correct) under the policy, any first attempt
  for r1 in (0.0, 1.0):
    for state in (False, True):
      cfg = LC(
          stage="stage2", alpha=10.0, baseline="none", num_samples=1, turn2_state_baseline=state
      )
      adv = [float(losses.turn_advantages(jnp.array([[r1], [r2]]), cfg)[1][0]) for r2 in (1.0, 0.0)]
      # d/dlogit of E[A]: sum_y pi(y) A(y) (1[y=correct] - p)
      grad = p * adv[0] * (1 - p) + (1 - p) * adv[1] * (0 - p)
      np.testing.assert_allclose(grad, p * (1 - p) * 11.0, rtol=1e-6)


def test_kl_estimators_hand_values():
  logp = jnp.array([np.log(0.5), np.log(0.2)])
  ref = jnp.array([np.log(0.25), np.log(0.4)])
  # k1 = logp - ref; k3 = ref/p - log(ref/p) - 1
  np.testing.assert_allclose(losses.kl_value(logp, ref, "k1"), [np.log(2), np.log(0.5)], rtol=1e-6)
  np.testing.assert_allclose(
      losses.kl_value(logp, ref, "k3"), [0.5 - np.log(0.5) - 1, 2 - np.log(2) - 1], rtol=1e-6
  )
  # Gradients w.r.t. logp: k1 term -> k1 (score function); k3 -> 1 - ref/p.
  g1 = jax.grad(lambda x: losses.kl_term(x, ref, "k1").sum())(logp)
  np.testing.assert_allclose(g1, [np.log(2), np.log(0.5)], rtol=1e-6)
  g3 = jax.grad(lambda x: losses.kl_term(x, ref, "k3").sum())(logp)
  np.testing.assert_allclose(g3, [1 - 0.5, 1 - 2.0], rtol=1e-6)
  # Values of the differentiable terms equal the estimates.
  np.testing.assert_allclose(losses.kl_term(logp, ref, "k1"), losses.kl_value(logp, ref, "k1"))


def _batch():
  # 2 rows, sequence of 6: [prompt, y1, y1, instr, y2, y2]
  logp = jnp.array([[0.0, -1.0, -2.0, -0.5, -1.5, -0.7], [0.0, -0.3, -0.4, -0.5, -2.0, -0.1]])
  ref = logp + jnp.array([[0.0, 0.1, -0.2, 0.3, 0.2, -0.1], [0.0, -0.3, 0.2, 0.1, 0.5, 0.0]])
  m1 = jnp.array([[0, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]], bool)
  m2 = jnp.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0]], bool)
  return logp, ref, jnp.stack([m1, m2])


def test_stage1_moves_turn1_only_through_kl():
  logp, ref, masks = _batch()
  r = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  for beta2 in (0.0, 0.3):
    cfg = LC(
        stage="stage1", beta1=0.05, beta2=beta2, kl_estimator="k1", baseline="none", num_samples=1
    )
    adv = losses.turn_advantages(r, cfg)
    g = jax.grad(lambda x: losses.policy_loss(x, ref, masks, adv, cfg)[0])(logp)
    k1 = logp - ref
    # Turn-1 tokens: exactly beta2 * k1, nothing from the reward.
    np.testing.assert_allclose(g * masks[0], beta2 * k1 * masks[0], atol=1e-6)
    # Turn-2 tokens: -A2 + beta1 * k1, with A2 = r2.
    expected2 = (-r[1][:, None] + 0.05 * k1) * masks[1]
    np.testing.assert_allclose(g * masks[1], expected2, atol=1e-6)
    # Everything else (prompt, instruction) gets no gradient.
    np.testing.assert_allclose(g * ~(masks[0] | masks[1]), 0.0)


def test_stage2_loss_value_by_hand():
  logp, ref, masks = _batch()
  r = jnp.array([[0.0, 1.0], [1.0, 1.0]])
  cfg = LC(
      stage="stage2",
      alpha=10.0,
      beta1=0.1,
      kl_estimator="k3",
      baseline="none",
      num_samples=1,
      turn2_state_baseline=False,
  )
  adv = losses.turn_advantages(r, cfg)
  loss_sum, count, sums = losses.policy_loss(logp, ref, masks, adv, cfg)
  # By hand: turn-1 advantages [0, 1], turn-2 [1 + 10, 1].
  lp, rf = np.asarray(logp), np.asarray(ref)
  k3 = np.exp(rf - lp) - (rf - lp) - 1
  a1, a2 = np.array([0.0, 1.0]), np.array([11.0, 1.0])
  m1, m2 = np.asarray(masks[0], float), np.asarray(masks[1], float)
  expected = (((-a1[:, None] * lp) + 0.1 * k3) * m1).sum() + (
      ((-a2[:, None] * lp) + 0.1 * k3) * m2
  ).sum()
  np.testing.assert_allclose(loss_sum, expected, rtol=1e-6)
  assert count == m1.sum() + m2.sum() == 6
  np.testing.assert_allclose(sums["kl_t1_sum"], (k3 * m1).sum(), rtol=1e-6)
  assert sums["tokens_t2"] == 3


def test_masked_tokens_contribute_nothing():
  logp, ref, masks = _batch()
  r = jnp.array([[0.0, 1.0], [1.0, 0.0]])
  cfg = LC(stage="stage2", num_samples=2)
  adv = losses.turn_advantages(r, cfg)
  base = losses.policy_loss(logp, ref, masks, adv, cfg)
  # Garbage (even NaN-free huge values) outside the masks changes nothing.
  outside = ~(masks[0] | masks[1])
  noisy = jnp.where(outside, 123.0, logp)
  noisy_ref = jnp.where(outside, -77.0, ref)
  other = losses.policy_loss(noisy, noisy_ref, masks, adv, cfg)
  np.testing.assert_allclose(base[0], other[0], rtol=1e-6)
  g = jax.grad(lambda x: losses.policy_loss(x, noisy_ref, masks, adv, cfg)[0])(noisy)
  np.testing.assert_allclose(g * outside, 0.0)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_sum_count_aggregation_accumulates_exactly(aggregation):
  rng = np.random.default_rng(0)
  rows, length = 8, 10
  logp = jnp.asarray(-rng.random((rows, length)), jnp.float32)
  ref = logp + jnp.asarray(0.1 * rng.standard_normal((rows, length)), jnp.float32)
  masks = jnp.asarray(rng.random((2, rows, length)) < 0.4)
  r = jnp.asarray(rng.integers(0, 2, (2, rows)), jnp.float32)
  cfg = LC(stage="stage2", num_samples=2, aggregation=aggregation, baseline="mean")
  adv = losses.turn_advantages(r, cfg)  # once over the whole batch
  full_sum, full_count, _ = losses.policy_loss(logp, ref, masks, adv, cfg)
  parts = [
      losses.policy_loss(
          logp[i : i + 2], ref[i : i + 2], masks[:, i : i + 2], adv[:, i : i + 2], cfg
      )
      for i in range(0, rows, 2)
  ]
  np.testing.assert_allclose(sum(p[0] for p in parts), full_sum, rtol=1e-5)
  np.testing.assert_allclose(sum(p[1] for p in parts), full_count)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(stage="stage3"), "stage"),
        (dict(beta1=-1.0), "beta1"),
        (dict(stage="single_turn", alpha=1.0), "alpha"),
        (dict(kl_estimator="k2"), "kl_estimator"),
        (dict(baseline="loo", num_samples=1), "num_samples"),
        (dict(aggregation="mean"), "aggregation"),
    ],
)
def test_bad_loss_config_names_the_field(kw, field):
  with pytest.raises(ValueError, match=f"LossConfig.{field}="):
    LC(**kw)


def test_followup_groups_baselines():
  # 2 prompts x 2 first attempts x 2 second attempts each (rows prompt-major).
  r1 = jnp.array([1.0, 1, 0, 0, 0, 0, 0, 0])  # first attempts repeat over their siblings
  r2 = jnp.array([1.0, 0, 1, 1, 0, 1, 0, 0])
  cfg = LC(stage="stage2", alpha=10.0, baseline="loo", num_samples=2, num_followups=2)
  adv = losses.turn_advantages(jnp.stack([r1, r2]), cfg)
  # Turn 1: minus the other first attempt of the same prompt.
  np.testing.assert_allclose(adv[0], [1, 1, -1, -1, 0, 0, 0, 0])
  # Turn 2: (1 + alpha) r2 minus the sibling's (same first attempt).
  np.testing.assert_allclose(adv[1], [11, -11, 0, 0, -11, 11, 0, 0])
  with pytest.raises(ValueError, match="num_followups"):
    LC(stage="single_turn", alpha=0.0, num_followups=2)


def test_anchor_turn1_keeps_beta2_on_turn1_in_stage2():
  # The paper's Stage II: beta1 on both turns; anchored: Stage I's beta2 on turn 1, the
  # reward terms unchanged.
  logp, ref, masks = _batch()
  r = jnp.array([[0.0, 1.0], [1.0, 1.0]])
  plain = LC(
      stage="stage2",
      alpha=10.0,
      beta1=0.05,
      beta2=0.7,
      kl_estimator="k1",
      baseline="none",
      num_samples=1,
      turn2_state_baseline=False,
  )
  anchored = dataclasses.replace(plain, anchor_turn1=True)
  assert plain.kl_coefs == (0.05, 0.05) and anchored.kl_coefs == (0.7, 0.05)
  assert LC(stage="stage1", beta1=0.05, beta2=0.7, anchor_turn1=True).kl_coefs == (0.7, 0.05)
  adv = losses.turn_advantages(r, anchored)
  np.testing.assert_allclose(adv, losses.turn_advantages(r, plain))
  g = jax.grad(lambda x: losses.policy_loss(x, ref, masks, adv, anchored)[0])(logp)
  k1 = logp - ref
  np.testing.assert_allclose(g * masks[0], (-adv[0][:, None] + 0.7 * k1) * masks[0], atol=1e-6)
  np.testing.assert_allclose(g * masks[1], (-adv[1][:, None] + 0.05 * k1) * masks[1], atol=1e-6)


def test_policy_loss_checks_shapes_at_its_boundary():
  """Mismatched [T, R, L] masks, [T, R] advantages or log-probs fail with chex's assertion
  at trace time, not as a silent broadcast."""
  cfg = losses.LossConfig(stage="stage2", num_samples=2)
  logp = jnp.zeros((4, 6))
  masks = jnp.ones((2, 4, 6), bool)
  adv = jnp.zeros((2, 4))
  losses.policy_loss(logp, logp, masks, adv, cfg)  # the right shapes
  for bad in [
      (logp, logp[:, :5], masks, adv),
      (logp, logp, masks[:, :3], adv),
      (logp, logp, masks, adv[:, :2]),
      (logp, logp, masks[0], adv),
  ]:
    with pytest.raises(AssertionError):
      losses.policy_loss(*bad, cfg)
  with pytest.raises(AssertionError):
    losses.turn_advantages(jnp.zeros((8,)), cfg)

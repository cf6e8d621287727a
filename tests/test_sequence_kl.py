"""The sequence KL (`kl_estimator='sequence'`) by exact enumeration over tiny categorical
policies: the expected gradient of the loss equals the analytic gradient of
E[return] - beta * KL(pi || ref) of each attempt's whole sequence, with beta per turn and
stage; the per-token k1/k3 penalties do not (they miss how earlier tokens change later ones'
distributions, and k3's expected gradient is the reverse KL's)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import losses

V = 3  # vocabulary of the toy policies
N = 2  # samples per prompt (leave-one-out groups)


def _seq_logps(theta, y):
  """Two-token autoregressive policy: theta = (first [V], second [V, V]) -> log pi of y's tokens."""
  first, second = theta
  l1 = jax.nn.log_softmax(first)[y[0]]
  l2 = jax.nn.log_softmax(second[y[0]])[y[1]]
  return jnp.stack([l1, l2])


SEQS = list(itertools.product(range(V), repeat=2))
REWARD = {y: float((y[0] + 2 * y[1]) % 3 == 0) for y in SEQS}  # any binary reward


def _theta(seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k1, (V,)), jax.random.normal(k2, (V, V)))


def _objective(theta, ref, beta):
  """E_pi[r(y)] - beta * KL(pi || ref) over two-token sequences, exactly."""
  lp = jnp.stack([_seq_logps(theta, y).sum() for y in SEQS])
  lr = jnp.stack([_seq_logps(ref, y).sum() for y in SEQS])
  p = jnp.exp(lp)
  r = jnp.asarray([REWARD[y] for y in SEQS])
  return jnp.sum(p * r) - beta * jnp.sum(p * (lp - lr))


def _expected_grad(loss, theta, outcomes, logps, reward):
  """Exactly E[grad loss(theta, group, rewards)] over groups of N independent samples drawn
  from `outcomes` with probability exp(sum logps(theta, y)) each; reward(y) -> float."""
  groups = list(itertools.product(outcomes, repeat=N))
  ids = jnp.asarray(groups, jnp.int32)  # [G, N, tokens]
  rewards = jnp.asarray([[reward(y) for y in g] for g in groups])
  weights = jnp.asarray(
      [np.prod([np.exp(logps(theta, jnp.asarray(y)).sum()) for y in g]) for g in groups]
  )
  grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(theta, ids, rewards)
  return jax.tree.map(lambda g: jnp.tensordot(weights, g, axes=1), grads)


def _expected_loss_grad(theta, ref, cfg):
  """E over all groups of N independent samples of grad(loss_sum), exactly."""

  def loss(theta, group, rewards):  # group [N, 2] token ids, rewards [N]
    logp = jnp.stack([jnp.pad(_seq_logps(theta, y), (1, 0)) for y in group])  # [R, 3]
    ref_logp = jnp.stack([jnp.pad(_seq_logps(ref, y), (1, 0)) for y in group])
    masks = jnp.asarray([[[0.0, 1.0, 1.0]] * N])  # [T=1, R, L]
    ratio = jax.lax.stop_gradient((logp - ref_logp).sum(-1))[None]  # [T, R]
    adv = losses.turn_advantages(rewards[None], cfg, ratio)
    return losses.policy_loss(logp, ref_logp, masks, adv, cfg)[0]

  return _expected_grad(loss, theta, SEQS, _seq_logps, REWARD.__getitem__)


def _rel_err(a, b):
  a, b = np.concatenate([np.ravel(x) for x in a]), np.concatenate([np.ravel(x) for x in b])
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("baseline", ["loo", "none"])
def test_sequence_kl_gives_the_exact_gradient_of_the_sequence_kl(baseline):
  theta, ref, beta = _theta(0), _theta(1), 0.3
  exact = jax.grad(_objective)(theta, ref, beta)  # ascent direction of E r - beta KL
  want = jax.tree.map(lambda g: -N * g, exact)  # loss_sum: N rows, each -A grad log pi

  def cfg(estimator):
    return losses.LossConfig(
        stage="single_turn",
        alpha=0.0,
        beta1=beta,
        kl_estimator=estimator,
        baseline=baseline,
        num_samples=N,
    )

  got = _expected_loss_grad(theta, ref, cfg("sequence"))
  assert _rel_err(got, want) < 1e-5
  # The per-token estimators are not this gradient (the test can tell them apart).
  for estimator in ("k1", "k3"):
    assert _rel_err(_expected_loss_grad(theta, ref, cfg(estimator)), want) > 1e-2


def test_sequence_kl_beta_per_turn_and_own_return_only():
  """Two one-token turns, Stage I: turn 1 is held by beta2 alone, turn 2 maximises r2 with
  beta1; each attempt's KL is folded into its own return only (gamma = 0 credit)."""
  k = jax.random.split(jax.random.key(3), 4)
  theta = (jax.random.normal(k[0], (V,)), jax.random.normal(k[1], (V, V)))  # turn 1, turn 2 | y1
  ref = (jax.random.normal(k[2], (V,)), jax.random.normal(k[3], (V, V)))
  beta1, beta2 = 0.2, 0.7
  r2 = lambda y1, y2: float((y1 + y2) % 2 == 0)
  pairs = list(itertools.product(range(V), repeat=2))

  def logps(th, y):  # [turn-1 token, turn-2 token] log-probs
    return jnp.stack([jax.nn.log_softmax(th[0])[y[0]], jax.nn.log_softmax(th[1][y[0]])[y[1]]])

  def kl1(th):
    lp, lr = jax.nn.log_softmax(th[0]), jax.nn.log_softmax(ref[0])
    return jnp.sum(jnp.exp(lp) * (lp - lr))

  def j2(th):  # E_{y1} [ E r2 - beta1 KL(pi(.|y1) || ref(.|y1)) ], y1 ~ the (fixed) turn 1
    p1 = jax.lax.stop_gradient(jnp.exp(jax.nn.log_softmax(th[0])))
    out = 0.0
    for y1 in range(V):
      lp, lr = jax.nn.log_softmax(th[1][y1]), jax.nn.log_softmax(ref[1][y1])
      reward = sum(jnp.exp(lp[y2]) * r2(y1, y2) for y2 in range(V))
      out += p1[y1] * (reward - beta1 * jnp.sum(jnp.exp(lp) * (lp - lr)))
    return out

  g1, g2 = jax.grad(lambda th: -beta2 * kl1(th))(theta), jax.grad(j2)(theta)
  want = (-N * g1[0], -N * g2[1])  # turn 1's parameters from J1, turn 2's from J2

  cfg = losses.LossConfig(
      stage="stage1", beta1=beta1, beta2=beta2, kl_estimator="sequence", num_samples=N
  )

  def loss(th, group, rewards2):  # group [N, 2]: (y1, y2) per row
    logp = jnp.stack([jnp.pad(logps(th, y), (1, 0)) for y in group])  # [R, 3]
    ref_logp = jnp.stack([jnp.pad(logps(ref, y), (1, 0)) for y in group])
    masks = jnp.asarray([[[0.0, 1.0, 0.0]] * N, [[0.0, 0.0, 1.0]] * N])  # [T=2, R, L]
    rewards = jnp.stack([jnp.zeros(N), rewards2])
    ratio = jax.lax.stop_gradient(jnp.einsum("trl,rl->tr", masks, logp - ref_logp))
    adv = losses.turn_advantages(rewards, cfg, ratio)
    return losses.policy_loss(logp, ref_logp, masks, adv, cfg)[0]

  total = _expected_grad(loss, theta, pairs, logps, lambda y: r2(*y))
  assert _rel_err([total[0]], [want[0]]) < 1e-5
  assert _rel_err([total[1]], [want[1]]) < 1e-5


def test_sequence_kl_needs_the_attempts_log_ratios():
  cfg = losses.LossConfig(stage="stage2", kl_estimator="sequence", num_samples=2)
  with pytest.raises(ValueError, match="log_ratios"):
    losses.turn_advantages(jnp.zeros((2, 4)), cfg)
  # The fold, by hand: returns minus beta * log-ratio before the (here: no) baseline.
  cfg = losses.LossConfig(
      stage="stage2",
      alpha=1.0,
      beta1=0.5,
      kl_estimator="sequence",
      baseline="none",
      num_samples=1,
      turn2_state_baseline=False,
  )
  r = jnp.asarray([[1.0, 0.0], [1.0, 1.0]])
  ratio = jnp.asarray([[0.2, -0.4], [1.0, 0.0]])
  np.testing.assert_allclose(
      losses.turn_advantages(r, cfg, ratio), [[1 - 0.1, 0 + 0.2], [1 - 0.5, 2 - 0.0]], rtol=1e-6
  )

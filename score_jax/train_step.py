"""The pure, jitted pieces of a training step: the REINFORCE/KL update and the reference pass.

Both are functions of arrays only (the model's graph is closed over), so the trainer jits
them once per stage with the state's shardings and donates the state's buffers.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from score_jax import losses, teacher_forcing
from score_jax.rollout import TrainBatch


class TrainState(flax.struct.PyTreeNode):
  params: Any  # nnx.State of the policy
  opt_state: Any
  step: jax.Array


def make_train_step(
    graphdef,
    optimizer,
    loss_cfg: losses.LossConfig,
    temperature: float,
    num_micro: int,
    logits_chunk: int = teacher_forcing.LOGITS_CHUNK_ELEMENTS,
):
  """The pure step (state, batch: TrainBatch) -> (state, metrics).

  Advantages are computed once over the whole batch (baselines see every group); the
  gradient of each micro-batch's loss *sum* is accumulated and divided by the total count,
  so accumulation equals the full-batch gradient exactly. `logits_chunk`: see
  `teacher_forcing.sequence_logprobs` (0 = full logits)."""

  def micro_loss(params, mb: TrainBatch):
    model = nnx.merge(graphdef, params)
    logp = teacher_forcing.sequence_logprobs(
        model, mb.tokens, mb.input_mask, temperature, logits_chunk
    )
    loss_sum, count, sums = losses.policy_loss(
        logp, mb.ref_logprobs, mb.turn_masks, mb.advantages, loss_cfg
    )
    return loss_sum, (count, sums)

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def step(state: TrainState, batch: TrainBatch):
    batch.check()
    log_ratios = None
    if loss_cfg.kl_estimator == "sequence":  # each attempt's sum_t logp - ref_logp
      ref_sums = jnp.einsum("trl,rl->tr", batch.turn_masks.astype(jnp.float32), batch.ref_logprobs)
      log_ratios = batch.attempt_logprobs[: loss_cfg.num_turns] - ref_sums[: loss_cfg.num_turns]
    adv = losses.turn_advantages(batch.rewards, loss_cfg, log_ratios)
    micro = batch.replace(advantages=adv).micro_batches(num_micro)

    def grads_and_sums(mb):
      (loss_sum, (count, sums)), g = grad_fn(state.params, mb)
      return g, loss_sum, count, sums

    def body(carry, mb):
      return jax.tree.map(jnp.add, carry, grads_and_sums(mb)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(grads_and_sums, first)
    )
    (grads, loss_sum, count, sums), _ = jax.lax.scan(body, zeros, micro)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = losses.finalize_metrics(sums)
    r = batch.rewards.astype(jnp.float32)
    for t in range(loss_cfg.num_turns):
      out[f"reward_t{t + 1}"] = jnp.mean(r[t])
      if log_ratios is not None:  # the attempts' sequence KL estimate, per attempt
        out[f"seq_kl_t{t + 1}"] = jnp.mean(log_ratios[t])
      out[f"adv_abs_t{t + 1}"] = jnp.mean(jnp.abs(adv[t]))
    if loss_cfg.num_turns > 1:
      out["shaped_reward_t2"] = jnp.mean(losses.shaped_rewards(r, loss_cfg)[1])
    out.update(
        loss=loss_sum / denom, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params)
    )
    return TrainState(params=params, opt_state=opt_state, step=state.step + 1), out

  return step


def make_logprob_fn(
    graphdef,
    temperature: float,
    num_micro: int = 1,
    logits_chunk: int = teacher_forcing.LOGITS_CHUNK_ELEMENTS,
):
  """Teacher-forced log-probs [R, L], in `num_micro` sequential micro-batches of rows (and
  the output layer in chunks of `logits_chunk` entries), like the train step."""

  def one(params, tokens, input_mask):
    model = nnx.merge(graphdef, params)
    return teacher_forcing.sequence_logprobs(model, tokens, input_mask, temperature, logits_chunk)

  def fn(params, tokens, input_mask):
    if num_micro == 1:
      return one(params, tokens, input_mask)
    r, l = tokens.shape
    split = lambda x: x.reshape(num_micro, r // num_micro, l)
    out = jax.lax.map(lambda xs: one(params, *xs), (split(tokens), split(input_mask)))
    return out.reshape(r, l)

  return fn

r"""SCoRe training: rollout -> reference log-probs -> rewards -> sharded REINFORCE/KL step.

  python -m score_jax.train --config=configs/embedded.py --workdir=/tmp/score
  python -m score_jax.train --config=configs/gemma_math.py --workdir=gs://bucket/run \
      --config.loss.alpha=5

Each step: the policy samples two attempts per problem in one compiled program; while the
device computes the frozen reference's log-probs of those attempts, the host scores them;
then one jitted, sharded, donated train step re-scores them under the policy and applies
Adam. Stages run in order (`config.stages`, `config.stage_steps`); checkpoints hold params,
optimizer state, step, PRNG key and data position, so rerunning the same command resumes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from score_jax import build, config_lib, environments, losses, metrics as metrics_lib, sharding
from score_jax import sampler as sampler_lib, teacher_forcing
from score_jax.checkpoints import state as ckpt_lib
from score_jax.evaluate import evaluate_two_turns
from score_jax.rollout import collect_async

logger = logging.getLogger(__name__)


class TrainState(flax.struct.PyTreeNode):
  params: Any  # nnx.State of the policy
  opt_state: Any
  step: jax.Array


def make_train_step(
    graphdef, optimizer, loss_cfg: losses.LossConfig, temperature: float, num_micro: int
):
  """The pure step (state, batch) -> (state, metrics).

  batch: tokens/input_mask/ref_logprobs [R, L], turn_masks [T, R, L], rewards [T, R].
  Advantages are computed once over the whole batch (baselines see every group); the
  gradient of each micro-batch's loss *sum* is accumulated and divided by the total count,
  so accumulation equals the full-batch gradient exactly."""

  def micro_loss(params, mb):
    model = nnx.merge(graphdef, params)
    logp = teacher_forcing.sequence_logprobs(model, mb["tokens"], mb["input_mask"], temperature)
    loss_sum, count, sums = losses.policy_loss(
        logp, mb["ref_logprobs"], mb["turn_masks"], mb["advantages"], loss_cfg
    )
    return loss_sum, (count, sums)

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
  row_axis = {"tokens": 0, "input_mask": 0, "ref_logprobs": 0, "turn_masks": 1, "advantages": 1}

  def split(x, axis):  # [.., R, ..] -> [M, .., R/M, ..]
    x = jnp.moveaxis(x, axis, 0)
    x = x.reshape((num_micro, x.shape[0] // num_micro) + x.shape[1:])
    return jnp.moveaxis(x, 1, axis + 1)

  def step(state: TrainState, batch):
    adv = losses.turn_advantages(batch["rewards"], loss_cfg)
    full = {k: batch[k] for k in row_axis if k != "advantages"}
    full["advantages"] = adv
    micro = {k: split(v, row_axis[k]) for k, v in full.items()}

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
    r = batch["rewards"].astype(jnp.float32)
    for t in range(loss_cfg.num_turns):
      out[f"reward_t{t + 1}"] = jnp.mean(r[t])
      out[f"adv_abs_t{t + 1}"] = jnp.mean(jnp.abs(adv[t]))
    if loss_cfg.num_turns > 1:
      out["shaped_reward_t2"] = jnp.mean(losses.shaped_rewards(r, loss_cfg)[1])
    out.update(
        loss=loss_sum / denom, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params)
    )
    return TrainState(params=params, opt_state=opt_state, step=state.step + 1), out

  return step


def make_logprob_fn(graphdef, temperature: float, num_micro: int = 1):
  """Teacher-forced log-probs [R, L], in `num_micro` sequential micro-batches of rows, so the
  reference pass holds the logits of one micro-batch at a time, like the train step."""

  def one(params, tokens, input_mask):
    model = nnx.merge(graphdef, params)
    return teacher_forcing.sequence_logprobs(model, tokens, input_mask, temperature)

  def fn(params, tokens, input_mask):
    if num_micro == 1:
      return one(params, tokens, input_mask)
    r, l = tokens.shape
    split = lambda x: x.reshape(num_micro, r // num_micro, l)
    out = jax.lax.map(lambda xs: one(params, *xs), (split(tokens), split(input_mask)))
    return out.reshape(r, l)

  return fn


def stage_at(config, step: int) -> str:
  """Which stage a global step belongs to."""
  total = 0
  for stage, n in zip(config.stages, config.stage_steps):
    total += int(n)
    if step < total:
      return stage
  return config.stages[-1]


class MetricWriter:
  """metrics.jsonl + TensorBoard event files (process 0 only) + a console progress line."""

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
    self.enabled = enabled
    self.total = total_steps
    self._tb = None
    self._t0 = time.time()
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # pragma: no cover - optional
        logger.warning("tensorboardX not installed; writing metrics.jsonl only")

  def write(self, step: int, scalars: dict[str, float], prefix: str = "train"):
    if not self.enabled:
      return
    rec = {"step": step, "split": prefix, **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(rec) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

  def progress(self, step: int, scalars: dict[str, float]):
    if not self.enabled:
      return
    done = step + 1
    frac = done / max(self.total, 1)
    bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
    eta = (time.time() - self._t0) / max(done, 1) * (self.total - done)
    shown = " ".join(
        f"{k}={scalars[k]:.3f}"
        for k in ("acc_t1", "acc_t2", "delta_t1_t2", "kl_t1", "kl_t2")
        if k in scalars
    )
    print(
        f"\r[{bar}] {done}/{self.total} {scalars.get('stage', '')} {shown} " f"eta {eta:.0f}s",
        end="\n" if done == self.total else "",
        flush=True,
        file=sys.stderr,
    )

  def close(self):
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


def step_metrics(scores, rollout, out, tokens_per_s: float | None = None) -> dict[str, float]:
  """Per-step training metrics from the host-side scores and the sampled attempts."""
  m: dict[str, float] = {}
  r = [np.asarray(s.rewards) for s in scores]
  if len(r) > 1:
    two = metrics_lib.two_turn_metrics(r[0], r[1])
    m.update(
        acc_t1=two["accuracy_t1"],
        acc_t2=two["accuracy_t2"],
        delta_t1_t2=two["delta_t1_t2"],
        delta_i_to_c=two["delta_i_to_c"],
        delta_c_to_i=two["delta_c_to_i"],
    )
  else:
    m.update(acc_t1=float(r[0].mean()))
  for t, turn in enumerate(out.turns, 1):
    mask = np.asarray(turn.mask)
    lens = mask.sum(-1)
    m[f"len_t{t}"] = float(lens.mean())
    m[f"entropy_t{t}"] = float(-(np.asarray(turn.logprobs_raw) * mask).sum() / max(mask.sum(), 1))
  if len(out.turns) > 1:
    t1, t2 = (np.asarray(t.tokens) for t in out.turns[:2])
    m1, m2 = (np.asarray(t.mask) for t in out.turns[:2])
    m["edit_distance"] = float(
        np.mean(
            [metrics_lib.normalized_edit_distance(a[x], b[y]) for a, x, b, y in zip(t1, m1, t2, m2)]
        )
    )
  if tokens_per_s is not None:
    m["tokens_per_s"] = tokens_per_s
  return m


class Trainer:
  """Owns the mesh, the policy/reference parameters, the compiled programs and the loop."""

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      workdir: str,
      env: environments.Environment | None = None,
  ):
    config_lib.validate(config, jax.device_count())
    self.config = config
    self.workdir = workdir
    self.is_main = jax.process_index() == 0
    devices = jax.devices()[: config.mesh.num_devices] if config.mesh.num_devices else None
    self.mesh = sharding.make_mesh(
        {a: int(config.mesh[a]) for a in ("data", "fsdp", "tensor")}, devices
    )
    self.env = env or environments.from_config(config)
    model = environments.load_policy(config, self.env)
    sharding.shard_model(model, self.mesh)
    self.graphdef, params = nnx.split(model)
    self.param_sh = sharding.model_shardings(params, self.mesh)
    # The frozen reference: the same initial weights, never seen by the optimiser.
    self.ref_params = jax.tree.map(jnp.copy, params)
    self.optimizer = build.make_optimizer(config.optim)
    self.opt_sh = sharding.tree_shardings_like(
        jax.eval_shape(self.optimizer.init, params), self.param_sh, self.mesh
    )
    opt_state = jax.jit(self.optimizer.init, out_shardings=self.opt_sh)(params)
    self.state_sh = TrainState(
        params=self.param_sh, opt_state=self.opt_sh, step=sharding.replicated(self.mesh)
    )
    # Everything on its final sharding up front, so the step compiles once.
    self.state = jax.device_put(
        TrainState(params=params, opt_state=opt_state, step=jnp.int32(0)), self.state_sh
    )
    self.single_turn = build.num_turns(config) == 1
    self.sampler = sampler_lib.Sampler(
        model, build.sampler_config(config, self.env, turns=build.num_turns(config)), mesh=self.mesh
    )
    self.eval_sampler = sampler_lib.Sampler(
        model, build.sampler_config(config, self.env, greedy=True), mesh=self.mesh
    )
    rows = config.batch_size * self.sampler.cfg.rows_per_prompt
    self.num_micro = rows // config.micro_batch_size if config.micro_batch_size else 1
    batch_sh = sharding.batch_sharding(self.mesh, 2)
    self._batch_sh = batch_sh
    self._steps: dict[str, Callable] = {}
    self._logprobs = jax.jit(
        make_logprob_fn(self.graphdef, config.sampler.temperature, self.num_micro),
        out_shardings=batch_sh,
    )
    self.total_steps = int(sum(config.stage_steps))
    # Replicated on the mesh (not on one local device) so multi-host checkpoints can save it.
    self.key = jax.jit(
        lambda: jax.random.key(config.seed), out_shardings=sharding.replicated(self.mesh)
    )()
    self.ckpt = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=max(config.keep_checkpoints, 2),
        async_save=config.async_checkpoints,
    )
    self.train_tasks = self.env.train_batches(config.batch_size, config.seed)
    # Greedy evaluation: one sample per problem, so as many problems as rows of a step.
    self.eval_batch_size = rows
    self.eval_tasks = self.env.eval_tasks(config.task.num_eval) if config.task.num_eval else []

  def _train_step(self, stage: str):
    if stage not in self._steps:
      step = make_train_step(
          self.graphdef,
          self.optimizer,
          build.loss_config(self.config, stage),
          self.config.sampler.temperature,
          self.num_micro,
      )
      self._steps[stage] = jax.jit(
          step,
          in_shardings=(self.state_sh, None),
          out_shardings=(self.state_sh, None),
          donate_argnums=(0,),
      )
    return self._steps[stage]

  # -- checkpoints -----------------------------------------------------------------------------

  def _ckpt_tree(self):
    return {
        "params": self.state.params,
        "opt_state": self.state.opt_state,
        "step": self.state.step,
        "rng": self.key,
    }

  def save(self, force: bool = False):
    step = int(self.state.step)
    self.ckpt.save(
        step,
        self._ckpt_tree(),
        metadata={"stage": stage_at(self.config, max(step - 1, 0)), "data_position": step},
        force=force,
    )

  def maybe_restore(self) -> bool:
    if self.ckpt.latest_step() is None:
      return False
    target = ckpt_lib.abstract_target(
        self._ckpt_tree(),
        {
            "params": self.param_sh,
            "opt_state": self.opt_sh,
            "step": sharding.replicated(self.mesh),
            "rng": sharding.replicated(self.mesh),
        },
    )
    tree, meta = self.ckpt.restore(target=target)
    self.state = TrainState(params=tree["params"], opt_state=tree["opt_state"], step=tree["step"])
    self.key = tree["rng"]
    logger.info("resumed from step %d (stage %s)", int(self.state.step), meta.get("stage"))
    return True

  # -- the loop --------------------------------------------------------------------------------

  def train_step(self, step: int) -> dict[str, float]:
    """One rollout + update at global `step`; returns host metrics."""
    stage = stage_at(self.config, step)
    tasks = self.train_tasks(step)
    key = jax.random.fold_in(self.key, step)
    t0 = time.perf_counter()
    pending = collect_async(self.sampler, self.state.params, self.env, tasks, key)
    # Device: reference log-probs of the attempts, dispatched before host scoring.
    ref_logprobs = self._logprobs(self.ref_params, pending.tokens, pending.input_mask)
    out = pending.out
    jax.block_until_ready(out.turns[-1].tokens)
    t_sample = time.perf_counter() - t0
    out = out.replace(turns=sharding.to_host(out.turns))  # numpy; gathered on multi-host
    scores = pending.score()  # host, overlaps with the reference forward
    t_reward = time.perf_counter() - t0 - t_sample
    batch = {
        "tokens": pending.tokens,
        "input_mask": pending.input_mask,
        "turn_masks": pending.turn_masks,
        "rewards": jnp.asarray(np.stack([s.rewards for s in scores]), jnp.float32),
        "ref_logprobs": ref_logprobs,
    }
    t1 = time.perf_counter()
    self.state, aux = self._train_step(stage)(self.state, batch)
    aux = jax.device_get(aux)
    t_step = time.perf_counter() - t1
    gen_tokens = sum(int(np.asarray(t.mask).sum()) for t in out.turns)
    m = step_metrics(scores, None, out, gen_tokens / max(t_sample, 1e-9))
    m.update({k: float(v) for k, v in aux.items()})
    m.update(
        time_sample=t_sample,
        time_reward=t_reward,
        time_step=t_step,
        stage_index=float(list(self.config.stages).index(stage)),
    )
    m["stage"] = stage
    return m

  def evaluate(self, step: int, tasks=None):
    tasks = self.eval_tasks if tasks is None else tasks
    if not tasks:
      return None
    return evaluate_two_turns(
        self.eval_sampler, self.state.params, self.env, tasks, batch_size=self.eval_batch_size
    )

  def method_name(self) -> str:
    stages = tuple(self.config.stages)
    if stages == ("single_turn",):
      return "single-turn RL"
    if stages == ("stage2",):
      return (
          "multi-turn RL (no Stage I)"
          if self.config.loss.alpha
          else "multi-turn RL (no Stage I, no shaping)"
      )
    return "SCoRe" if self.config.loss.alpha else "SCoRe (no reward shaping)"

  def _write_eval(self, final) -> None:
    """eval/<task>_<split>.{json,jsonl,md} of the policy and, with config.report, the base
    model's too plus report.md and curves.png."""
    from score_jax import report as report_lib
    from score_jax.evaluate import write_results

    task, split = self.config.task.name, self.config.task.eval_split
    if self.is_main:
      write_results(self.workdir, task, split, final, name=self.method_name())
    if not self.config.report:
      return
    # Every process samples (a collective program on multi-host); process 0 writes.
    base = evaluate_two_turns(
        self.eval_sampler,
        self.ref_params,
        self.env,
        self.eval_tasks,
        batch_size=self.eval_batch_size,
    )
    if not self.is_main:
      return
    write_results(self.workdir, task, f"{split}_base", base, name="base model")
    starts = list(np.cumsum([0] + [int(n) for n in self.config.stage_steps])[:-1])
    notes = [
        f"stages: {', '.join(f'{s} ({n} steps)' for s, n in zip(self.config.stages, self.config.stage_steps))}",
        f"per-problem attempts: eval/{task}_{split}.jsonl (policy), "
        f"eval/{task}_{split}_base.jsonl (base model)",
    ]
    path = report_lib.write_report(
        self.workdir,
        {"base model": base.metrics, self.method_name(): final.metrics},
        title=f"{self.method_name()} on {task}",
        notes=notes,
        stage_starts=starts,
    )
    logger.info("wrote %s", path)

  def run(self) -> dict[str, Any]:
    resumed = self.maybe_restore()
    writer = MetricWriter(self.workdir, self.total_steps, enabled=self.is_main)
    start = int(self.state.step)
    if self.is_main:
      logger.info(
          "%s at step %d of %d", "resuming" if resumed else "starting", start, self.total_steps
      )
    last_eval = None
    try:
      for step in range(start, self.total_steps):
        m = self.train_step(step)
        stage = m.pop("stage")
        if self.config.log_every and (
            step % self.config.log_every == 0 or step == self.total_steps - 1
        ):
          writer.write(step, m)
        writer.progress(step, {**m, "stage": stage})
        done = step + 1
        if self.config.checkpoint_every and done % self.config.checkpoint_every == 0:
          self.save()
        if self.config.eval_every and done % self.config.eval_every == 0 and self.eval_tasks:
          last_eval = self.evaluate(done)
          writer.write(done, last_eval.metrics, prefix="eval")
      if self.eval_tasks and (
          last_eval is None
          or self.config.eval_every == 0
          or self.total_steps % self.config.eval_every
      ):
        last_eval = self.evaluate(self.total_steps)
        writer.write(self.total_steps, last_eval.metrics, prefix="eval")
      if int(self.state.step) != start or self.ckpt.latest_step() != int(self.state.step):
        self.save(force=True)
      if last_eval is not None:
        self._write_eval(last_eval)  # on every process; only process 0 writes
    finally:
      self.ckpt.wait()
      writer.close()
    return {"final_eval": last_eval.metrics if last_eval else None, "step": int(self.state.step)}


def main(argv):
  del argv
  from absl import flags
  from ml_collections import config_flags  # noqa: F401 (flags registered below)

  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  # Every field, and that the dataset files exist, before anything loads or JAX starts
  # (Trainer checks the mesh against the devices, which must wait for the distributed
  # runtime).
  config_lib.validate(config)
  if config.task.name not in ("toy", "embedded"):
    environments.check_task_sources(config)
  sharding.maybe_initialize_distributed(config.distributed)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  trainer = Trainer(config, workdir)
  result = trainer.run()
  if trainer.is_main and result["final_eval"]:
    print(metrics_lib.format_table({"policy": result["final_eval"]}))


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (checkpoints, metrics, report).")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  from score_jax import cli

  _define_flags()
  cli.run(main)  # input errors: one line on stderr, exit 2 (traceback with --verbosity=1)

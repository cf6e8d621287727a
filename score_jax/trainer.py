"""The training loop: rollout -> reference log-probs -> rewards -> sharded REINFORCE/KL step.

Each step: the policy samples two attempts per problem in one compiled program; while the
device computes the frozen reference's log-probs of those attempts, the host scores them;
then one jitted, sharded, donated train step (`score_jax.train_step`) re-scores them under the
policy and applies the optimizer. Stages run in order (`Parts.schedule`); checkpoints hold
params, optimizer state, step, PRNG key and data position, so rerunning the same command
resumes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax import build, metrics as metrics_lib, sampler as sampler_lib, sharding
from score_jax.checkpoints import state as ckpt_lib
from score_jax.evaluate import evaluate_two_turns
from score_jax.rollout import collect_async
from score_jax.train_step import TrainState, make_logprob_fn, make_train_step

logger = logging.getLogger(__name__)


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
  """Owns the policy/reference parameters on the mesh, the compiled programs and the loop.

  Built from parts (`score_jax.build.parts`), never from the config itself."""

  def __init__(self, parts: build.Parts, workdir: str):
    self.parts = parts
    self.loop = loop = parts.loop
    self.schedule = parts.schedule
    self.workdir = workdir
    self.is_main = jax.process_index() == 0
    self.mesh = parts.mesh
    self.env = parts.env
    model = parts.policy
    sharding.shard_model(model, self.mesh)
    self.graphdef, params = nnx.split(model)
    self.param_sh = sharding.model_shardings(params, self.mesh)
    # The frozen reference: the same initial weights, never seen by the optimiser.
    self.ref_params = jax.tree.map(jnp.copy, params)
    self.optimizer = parts.optimizer
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
    self.sampler = sampler_lib.Sampler(model, parts.sampler, mesh=self.mesh)
    self.eval_sampler = sampler_lib.Sampler(model, parts.eval_sampler, mesh=self.mesh)
    rows = loop.batch_size * self.sampler.cfg.rows_per_prompt
    self.num_micro = rows // loop.micro_batch_size if loop.micro_batch_size else 1
    batch_sh = sharding.batch_sharding(self.mesh, 2)
    self._batch_sh = batch_sh
    self._steps: dict[str, Callable] = {}
    self._logprobs = jax.jit(
        make_logprob_fn(self.graphdef, loop.temperature, self.num_micro),
        out_shardings=batch_sh,
    )
    self.total_steps = self.schedule.total_steps
    # Replicated on the mesh (not on one local device) so multi-host checkpoints can save it.
    self.key = jax.jit(
        lambda: jax.random.key(loop.seed), out_shardings=sharding.replicated(self.mesh)
    )()
    self.ckpt = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        max_to_keep=max(loop.keep_checkpoints, 2),
        async_save=loop.async_checkpoints,
    )
    self.train_tasks = self.env.train_batches(loop.batch_size, loop.seed)
    # Greedy evaluation: one sample per problem, so as many problems as rows of a step.
    self.eval_batch_size = rows
    self.eval_tasks = self.env.eval_tasks(loop.num_eval) if loop.num_eval else []

  def _train_step(self, stage: str):
    if stage not in self._steps:
      step = make_train_step(
          self.graphdef,
          self.optimizer,
          self.parts.losses[stage],
          self.loop.temperature,
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
        metadata={"stage": self.schedule.stage_at(max(step - 1, 0)), "data_position": step},
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
    stage = self.schedule.stage_at(step)
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
    batch = pending.batch(scores, ref_logprobs)
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
        stage_index=float(self.schedule.stages.index(stage)),
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
    return self.loop.method

  def _write_eval(self, final) -> None:
    """eval/<task>_<split>.{json,jsonl,md} of the policy and, with `loop.report`, the base
    model's too plus report.md and curves.png."""
    from score_jax import report as report_lib
    from score_jax.evaluate import write_results

    task, split = self.loop.task_name, self.loop.eval_split
    if self.is_main:
      write_results(self.workdir, task, split, final, name=self.method_name())
    if not self.loop.report:
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
    starts = self.schedule.starts
    stages = zip(self.schedule.stages, self.schedule.stage_steps)
    notes = [
        f"stages: {', '.join(f'{s} ({n} steps)' for s, n in stages)}",
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
        if self.loop.log_every and (
            step % self.loop.log_every == 0 or step == self.total_steps - 1
        ):
          writer.write(step, m)
        writer.progress(step, {**m, "stage": stage})
        done = step + 1
        if self.loop.checkpoint_every and done % self.loop.checkpoint_every == 0:
          self.save()
        if self.loop.eval_every and done % self.loop.eval_every == 0 and self.eval_tasks:
          last_eval = self.evaluate(done)
          writer.write(done, last_eval.metrics, prefix="eval")
      if self.eval_tasks and (
          last_eval is None or self.loop.eval_every == 0 or self.total_steps % self.loop.eval_every
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

r"""The paper's comparison (Tables 2 and 4) at small scale, on the embedded pair-sum task (CPU).

  python benchmarks/reproduce_table.py --workdir=/tmp/table --seeds=0,1,2
  python benchmarks/reproduce_table.py --workdir=/tmp/table --seeds=0 --steps_scale=0.2  # quick

Every row starts from the same embedded base model (built once, cached like the main job's)
and is evaluated greedily, both turns, on the same held-out problems (`--num_eval`):

  base model          the base model, prompted with the self-correction instruction
  Self-Refine         the base model with a Self-Refine style turn-2 prompt that asks it to
                      check its answer first (feedback) and then answer again (refine)
  STaR                SFT of the base on its own two-turn samples whose second attempt is
                      correct (the paper's STaR D+ traces)
  Pair-SFT            SFT on synthetic correction traces built from the base's own first
                      attempts: an incorrect attempt followed by a correct one to the same
                      problem, plus correct -> same correct attempt (keep what is right)
  single-turn RL      REINFORCE on turn 1 only (the "without multi-turn training" ablation)
  no Stage I          multi-turn RL (Stage II objective) from the base, no initialisation
  no reward shaping   Stage I then Stage II with alpha = 0
  SCoRe               Stage I then Stage II with the shaping bonus (configs/embedded.py)

RL rows use configs/embedded.py's hyper-parameters and total step count (x --steps_scale);
seeds change the rollouts' PRNG, the training problem stream and the SFT data. Prints the
table (mean ± std over seeds, percent), its wall time, and writes <workdir>/table.md and
<workdir>/table.json (every run's metrics), which is what README shows.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from configs import embedded as embedded_config  # noqa: E402
from score_jax import evaluate, metrics as metrics_lib, rollout, sft  # noqa: E402
from score_jax import build, embedded_base  # noqa: E402
from score_jax.environments import embedded  # noqa: E402
from score_jax.tasks import pair_sum  # noqa: E402
from score_jax.trainer import Trainer  # noqa: E402

METHODS = (
    "base",
    "self_refine",
    "star",
    "pair_sft",
    "single_turn_rl",
    "no_stage1",
    "no_shaping",
    "score",
)
NAMES = {
    "base": "base model",
    "self_refine": "Self-Refine",
    "star": "STaR",
    "pair_sft": "Pair-SFT",
    "single_turn_rl": "single-turn RL",
    "no_stage1": "multi-turn RL, no Stage I",
    "no_shaping": "SCoRe, no reward shaping",
    "score": "SCoRe",
}
# Self-Refine: feedback ("check the sum against the target"), then refine, in one prompt.
SELF_REFINE_INSTRUCTION = (
    "Check the answer above: do the two numbers add up to the target? "
    "If not, correct it. " + pair_sum.QUESTION
)

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/score_table", "Runs and the table go here.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (>= 3 for mean ± std).")
_METHODS = flags.DEFINE_list("methods", list(METHODS), f"Rows to run, of {METHODS}.")
_SCALE = flags.DEFINE_float("steps_scale", 1.0, "Multiplies every RL/SFT step count.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 1000, "Held-out problems (same for every row).")
_SFT_PROBLEMS = flags.DEFINE_integer(
    "sft_problems",
    2048,
    "Training problems sampled from the " "base model to build the STaR / Pair-SFT data.",
)
_SFT_STEPS = flags.DEFINE_integer("sft_steps", 150, "SFT steps of STaR / Pair-SFT (x scale).")


def base_config(seed: int, scale: float):
  c = embedded_config.get_config()
  c.seed = seed
  c.task.num_eval = _NUM_EVAL.value
  c.stage_steps = tuple(max(1, round(n * scale)) for n in c.stage_steps)
  c.checkpoint_every = 0
  c.report = False
  c.log_every = 0
  return c


def rl_config(method: str, seed: int, scale: float):
  c = base_config(seed, scale)
  total = int(sum(c.stage_steps))
  if method == "single_turn_rl":
    c.stages, c.stage_steps, c.loss.alpha = ("single_turn",), (total,), 0.0
    # As many sampled attempts per step as the two-turn runs (first x second attempts).
    c.sampler.num_samples *= c.sampler.followups
    c.sampler.followups = 1
  elif method == "no_stage1":
    c.stages, c.stage_steps = ("stage2",), (total,)
  elif method == "no_shaping":
    c.loss.alpha = 0.0
  elif method != "score":
    raise ValueError(f"not an RL method: {method!r}")
  return c


def _eval(trainer: Trainer, params, env=None):
  """Greedy two-turn metrics on the held-out problems (with `env`'s instruction if given)."""
  sampler = trainer.eval_sampler
  if env is not None and env is not trainer.env:  # another instruction: its own sampler
    import dataclasses
    from flax import nnx
    from score_jax import sampler as sampler_lib

    cfg = dataclasses.replace(
        trainer.eval_sampler.cfg,
        instruction_len=max(
            [trainer.eval_sampler.cfg.instruction_len]
            + [len(i) for i in env.instructions(trainer.eval_tasks)]
        ),
    )
    sampler = sampler_lib.Sampler(nnx.merge(trainer.graphdef, params), cfg, mesh=trainer.mesh)
  return evaluate.evaluate_two_turns(
      sampler, params, env or trainer.env, trainer.eval_tasks, batch_size=trainer.eval_batch_size
  ).metrics


def run_rl(method: str, seed: int, workdir: str):
  trainer = Trainer(build.parts(rl_config(method, seed, _SCALE.value)), workdir)
  for step in range(trainer.total_steps):
    m = trainer.train_step(step)
    if step % 25 == 0 or step == trainer.total_steps - 1:
      logging.info(
          "%s seed %d step %d/%d: acc_t1 %.3f acc_t2 %.3f kl_t1 %.3f",
          method,
          seed,
          step + 1,
          trainer.total_steps,
          m["acc_t1"],
          m.get("acc_t2", m["acc_t1"]),
          m["kl_t1"],
      )
  # The eval sampler has two turns also for single-turn RL: evaluated as the paper does.
  return _eval(trainer, trainer.state.params)


def sample_base(trainer: Trainer, seed: int, n_problems: int):
  """(problem, y1 tokens, y2 tokens, r1, r2) of the base's own two-turn samples (at the
  rollout temperature)."""
  out = []
  b = trainer.loop.batch_size
  for i in range(max(1, n_problems // b)):
    tasks = pair_sum.problems("train", 10_000_000 + i * b, b, trainer.env.spec, seed)
    key = jax.random.fold_in(jax.random.key(seed + 1000), i)
    pending = rollout.collect_async(trainer.sampler, trainer.ref_params, trainer.env, tasks, key)
    s1, s2 = pending.score()
    t1, t2 = rollout.turn_token_lists(pending.out)
    rows_per_task = trainer.sampler.cfg.rows_per_prompt
    for r in range(len(t1)):
      out.append((tasks[r // rows_per_task], t1[r], t2[r], s1.rewards[r], s2.rewards[r]))
  return out


def sft_examples(method: str, env, samples, rng):
  """Turn-2 SFT examples (context = prompt + y1 + instruction, response = y2)."""
  prompt, instr = {}, {}
  ex = []
  if method == "star":  # the base's own successful second attempts
    for p, y1, y2, _, r2 in samples:
      if r2 > 0:
        ex.append((p, y1, y2))
  elif method == "pair_sft":  # incorrect first attempt -> a correct first attempt
    by_problem: dict[str, tuple[list, list]] = {}
    for p, y1, _, r1, _ in samples:
      good, bad = by_problem.setdefault(p.id, ([], []))
      (good if r1 > 0 else bad).append((p, y1))
    for good, bad in by_problem.values():
      for p, y in good:
        ex.append((p, y, y))  # keep a correct answer
        if bad:
          ex.append((p, bad[rng.integers(len(bad))][1], y))  # fix an incorrect one
  else:
    raise ValueError(f"not an SFT method: {method!r}")
  if not ex:
    raise RuntimeError(f"{method}: no training traces (the base model never succeeded)")
  for p, _, _ in ex:
    if p.id not in prompt:
      prompt[p.id] = env.prompt_tokens([p])[0]
      instr[p.id] = env.instructions([p])[0]
  return [(prompt[p.id] + list(y1) + instr[p.id], list(y2)) for p, y1, y2 in ex]


def run_sft(method: str, seed: int, workdir: str):
  config = base_config(seed, _SCALE.value)
  trainer = Trainer(build.parts(config), workdir)
  samples = sample_base(trainer, seed, _SFT_PROBLEMS.value)
  rng = np.random.default_rng(seed)
  examples = sft_examples(method, trainer.env, samples, rng)
  seq_len = max(len(a) + len(b) for a, b in examples)
  cfg = sft.SFTConfig(
      steps=max(1, round(_SFT_STEPS.value * _SCALE.value)),
      batch_size=128,
      seq_len=seq_len,
      learning_rate=3e-4,
      warmup_steps=10,
      log_every=50,
  )
  logging.info("%s seed %d: %d traces from %d samples", method, seed, len(examples), len(samples))
  base_dir = embedded_base.ensure_base_model(build.embedded_recipe(config), config.model.path)
  model = embedded_base.load_model(base_dir)

  def batch(step):
    idx = np.random.default_rng([seed, step]).integers(len(examples), size=cfg.batch_size)
    return [examples[i] for i in idx]

  sft.finetune(model, batch, cfg, pad_id=trainer.env.pad_id)
  from flax import nnx

  params = jax.device_put(nnx.split(model)[1], trainer.param_sh)
  return _eval(trainer, params)


def run_one(method: str, seed: int, workdir: str):
  if method in ("base", "self_refine"):
    trainer = Trainer(build.parts(base_config(seed, _SCALE.value)), workdir)
    env = trainer.env
    if method == "self_refine":
      env = embedded.PairSumEnvironment(
          trainer.env.tokenizer,
          trainer.env.spec,
          instruction=SELF_REFINE_INSTRUCTION,
          restate=trainer.env.restate,
      )
    return _eval(trainer, trainer.ref_params, env)
  if method in ("star", "pair_sft"):
    return run_sft(method, seed, workdir)
  return run_rl(method, seed, workdir)


def summarize(results: dict[str, list[dict]]) -> str:
  keys = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")
  head = ["method", "Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δ^{i→c}", "Δ^{c→i}"]
  lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * 5]
  for method, runs in results.items():
    cells = []
    for k in keys:
      v = 100 * np.asarray([r[k] for r in runs])
      cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
    lines.append(f"| {NAMES[method]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  for m in _METHODS.value:
    if m not in METHODS:
      raise app.UsageError(f"--methods: unknown method {m!r}; expected some of {METHODS}")
  seeds = [int(s) for s in _SEEDS.value]
  os.makedirs(_WORKDIR.value, exist_ok=True)
  t0 = time.time()
  results: dict[str, list[dict]] = {}
  for method in _METHODS.value:
    for seed in seeds:
      t = time.time()
      m = run_one(method, seed, os.path.join(_WORKDIR.value, f"{method}_seed{seed}"))
      m["wall_s"] = time.time() - t
      results.setdefault(method, []).append({"seed": seed, **m})
      logging.info(
          "%s seed %d: %s (%.0f s)",
          method,
          seed,
          {k: round(v, 3) for k, v in m.items()},
          m["wall_s"],
      )
  wall = time.time() - t0
  table = summarize(results)
  text = (
      f"{table}\n\nPercent, mean ± std over seeds {seeds}, {_NUM_EVAL.value} held-out "
      f"problems, greedy; steps_scale={_SCALE.value}; wall time {wall / 60:.1f} min on "
      f"{os.cpu_count()} CPU cores ({jax.devices()[0].platform}).\n"
  )
  print(text)
  with open(os.path.join(_WORKDIR.value, "table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(_WORKDIR.value, "table.json"), "w") as f:
    json.dump(
        {
            "seeds": seeds,
            "steps_scale": _SCALE.value,
            "num_eval": _NUM_EVAL.value,
            "wall_s": wall,
            "runs": results,
        },
        f,
        indent=1,
    )


if __name__ == "__main__":
  app.run(main)

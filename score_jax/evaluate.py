r"""Two-turn evaluation: both attempts of every held-out problem, the five metrics, records.

  python -m score_jax.evaluate --config=configs/gemma3_270m_eval.py:gsm8k --workdir=/tmp/eval \
      --config.task.source=../shared/data/gsm8k_test.jsonl --num_problems=32
  python -m score_jax.evaluate --config=configs/embedded.py --workdir=/tmp/score \
      --checkpoint_dir=/tmp/score/checkpoints

Writes <workdir>/eval/<dataset>_<split>.json (n, accuracy_t1, accuracy_t2, delta_t1_t2,
delta_i_to_c, delta_c_to_i, and the inference-compute comparison when asked), a JSONL of
every problem's two attempts and rewards, and a markdown table. Decoding is greedy, as in
the paper; the compute comparison samples at `--sc_temperature` (paper: 0.7).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import jax
import numpy as np

from score_jax import metrics as metrics_lib
from score_jax import rollout as rollout_lib
from score_jax import sampler as sampler_lib

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalResult:
  metrics: dict[str, float]
  records: list[dict[str, Any]]


def _batches(tasks: Sequence[Any], batch_size: int):
  """Fixed-size batches (the last one padded by repeating its last task): one compile."""
  for i in range(0, len(tasks), batch_size):
    chunk = list(tasks[i : i + batch_size])
    yield chunk + [chunk[-1]] * (batch_size - len(chunk)), len(chunk)


def sample_and_score(sampler, params, env, tasks, batch_size, key):
  """All turns for `tasks`; returns per turn (rewards [N*n], Scores list per batch)."""
  per_turn_scores: list[list] = [[] for _ in sampler.cfg.turn_budgets]
  n = sampler.cfg.num_samples
  for b, (chunk, real) in enumerate(_batches(tasks, batch_size)):
    pending = rollout_lib.collect_async(sampler, params, env, chunk, jax.random.fold_in(key, b))
    for t, s in enumerate(pending.score()):
      keep = real * n
      cut = lambda v: None if v is None else v[:keep]  # noqa: E731
      per_turn_scores[t].append(
          rollout_lib.Scores(
              rewards=s.rewards[:keep],
              reasons=s.reasons[:keep],
              texts=s.texts[:keep],
              tests_passed=cut(s.tests_passed),
              tests_total=cut(s.tests_total),
          )
      )
  merged = []
  for scores in per_turn_scores:
    join = (
        lambda f: None
        if any(getattr(s, f) is None for s in scores)
        else np.concatenate([getattr(s, f) for s in scores])
    )  # noqa: E731
    merged.append(
        rollout_lib.Scores(
            rewards=np.concatenate([s.rewards for s in scores]),
            reasons=[r for s in scores for r in s.reasons],
            texts=[x for s in scores for x in s.texts],
            tests_passed=join("tests_passed"),
            tests_total=join("tests_total"),
        )
    )
  return merged


def evaluate_two_turns(
    sampler: sampler_lib.Sampler, params, env, tasks: Sequence[Any], *, batch_size: int, key=None
) -> EvalResult:
  """Greedy (or the sampler's) two attempts per task -> metrics + per-problem records."""
  key = jax.random.key(0) if key is None else key
  turns = sample_and_score(sampler, params, env, tasks, batch_size, key)
  r1, r2 = turns[0].rewards, turns[-1].rewards
  m = metrics_lib.two_turn_metrics(r1, r2)
  n = sampler.cfg.num_samples
  records = []
  for row in range(len(r1)):  # task-major rows: row i*n + j is sample j of task i
    i = row // n
    rec = {"id": tasks[i].id}
    if n > 1:
      rec["sample"] = row % n
    rec.update(
        attempts=[t.texts[row] for t in turns],
        rewards=[float(t.rewards[row]) for t in turns],
        reasons=[t.reasons[row] for t in turns],
    )
    if all(t.tests_total is not None for t in turns):  # code: test cases passed / in all
      rec["tests"] = [[int(t.tests_passed[row]), int(t.tests_total[row])] for t in turns]
    records.append(rec)
  return EvalResult(
      metrics={k: int(v) if k == "n" else float(v) for k, v in m.items()}, records=records
  )


def _majority(answers: Sequence[str | None]) -> int | None:
  """Index of a representative of the most common non-empty answer."""
  counts = collections.Counter(a for a in answers if a)
  if not counts:
    return None
  best = counts.most_common(1)[0][0]
  return answers.index(best)


def _check_scaling_args(k: int, kind: str) -> None:
  if k < 2 or k % 2:
    raise ValueError(f"--sc_samples={k}: must be an even number >= 2")
  if kind == "code":
    raise ValueError(
        f"--sc_samples={k}: the self-consistency comparison votes over final "
        "answers; it is defined for math tasks only, not code"
    )


def compute_scaling(
    params,
    env,
    tasks,
    model,
    sampler_cfg: sampler_lib.SamplerConfig,
    k: int,
    *,
    batch_size: int,
    key=None,
) -> dict[str, float]:
  """The paper's inference-compute comparison at K samples (math tasks).

  parallel: majority vote over K first attempts. sequential: K/2 first attempts each
  followed by its self-correction, majority vote over the K/2 corrected answers.
  """
  from score_jax.rewards.math_grader import extract_answer, normalize_answer

  _check_scaling_args(k, env.kind)
  key = jax.random.key(1) if key is None else key
  mode = "gsm8k" if env.kind == "gsm8k" else "math"
  out = {}
  for arm, (name, n, turns) in enumerate((("parallel", k, 1), ("sequential", k // 2, 2))):
    cfg = dataclasses.replace(
        sampler_cfg,
        num_samples=n,
        greedy=False,
        turn_budgets=tuple(sampler_cfg.turn_budgets)[:turns],
    )
    sampler = sampler_lib.Sampler(model, cfg)
    # Each arm its own samples: with one key, the sequential arm's first attempts would be
    # the parallel arm's first k/2 (the two arms' votes correlated by construction).
    arm_key = jax.random.fold_in(key, arm)
    final = sample_and_score(sampler, params, env, tasks, batch_size, arm_key)[-1]
    correct = []
    for i in range(len(tasks)):
      texts = final.texts[i * n : (i + 1) * n]
      answers = [extract_answer(t, mode) for t in texts]
      answers = [normalize_answer(a) if a else None for a in answers]
      j = _majority(answers)
      correct.append(0.0 if j is None else float(final.rewards[i * n + j]))
    out[f"majority_at_{k}_{name}"] = float(np.mean(correct))
  return out


def write_results(
    workdir: str,
    dataset: str,
    split: str,
    result: EvalResult,
    extra: dict[str, float] | None = None,
    name: str = "policy",
) -> str:
  """<workdir>/eval/<dataset>_<split>.{json,jsonl,md}, atomically (tmp + rename)."""
  d = os.path.join(workdir, "eval")
  os.makedirs(d, exist_ok=True)
  base = os.path.join(d, f"{dataset}_{split}")
  summary = dict(result.metrics, **(extra or {}))

  def put(path, text):
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)

  put(base + ".json", json.dumps(summary, indent=2) + "\n")
  put(base + ".jsonl", "".join(json.dumps(r) + "\n" for r in result.records))
  put(base + ".md", metrics_lib.format_table({name: result.metrics}) + "\n")
  return base + ".json"


def main(argv):
  del argv
  from absl import flags
  from flax import nnx

  from score_jax import build, cli
  from score_jax.checkpoints import state as ckpt_lib

  FLAGS = flags.FLAGS
  config = FLAGS.config
  cli.configure_logging()
  build.preflight(config, training=False)
  loop = build.loop_settings(config)
  for name in ("num_problems", "batch_size", "sc_samples"):
    if FLAGS[name].value < 0:
      raise ValueError(f"--{name}={FLAGS[name].value}: must be non-negative (0 = default)")
  if FLAGS.sc_samples:
    _check_scaling_args(FLAGS.sc_samples, "math")  # the task kind is checked once it is read
    if not FLAGS.sc_temperature > 0:
      raise ValueError(f"--sc_temperature={FLAGS.sc_temperature}: must be positive")
  if FLAGS.checkpoint_dir and not os.path.isdir(FLAGS.checkpoint_dir):
    raise FileNotFoundError(f"--checkpoint_dir={FLAGS.checkpoint_dir!r} does not exist")
  env = build.environment(config)  # reads tasks: bad paths fail before the model
  tasks = env.eval_tasks(FLAGS.num_problems or loop.num_eval or 10**9)
  if not tasks:
    raise ValueError(f"config.task.eval_split={loop.eval_split!r}: no evaluation tasks")
  if FLAGS.sc_samples:
    _check_scaling_args(FLAGS.sc_samples, env.kind)
  model = build.policy(config, env)
  graphdef, params = nnx.split(model)
  if FLAGS.checkpoint_dir:
    ckpt = ckpt_lib.Checkpointer(FLAGS.checkpoint_dir)
    tree, _ = ckpt.restore()
    nnx.update(model, tree["params"])
    params = nnx.state(model)
  cfg = build.sampler_config(config, env, greedy=True, temperature=FLAGS.sc_temperature)
  sampler = sampler_lib.Sampler(model, cfg)
  bs = FLAGS.batch_size or loop.batch_size
  result = evaluate_two_turns(sampler, params, env, tasks, batch_size=bs)
  extra = {}
  if FLAGS.sc_samples:
    extra = compute_scaling(params, env, tasks, model, cfg, FLAGS.sc_samples, batch_size=bs)
  path = write_results(FLAGS.workdir, loop.task_name, loop.eval_split, result, extra)
  print(metrics_lib.format_table({"policy": result.metrics}))
  if extra:
    print(json.dumps(extra, indent=2))
  print(f"wrote {path}")


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:arg]", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory; results go to <workdir>/eval/.")
  flags.DEFINE_string(
      "checkpoint_dir",
      "",
      "A score_jax training checkpoint directory; " "default: the model that config.model names.",
  )
  flags.DEFINE_integer(
      "num_problems", 0, "Evaluate the first N held-out problems (0: " "config.task.num_eval)."
  )
  flags.DEFINE_integer("batch_size", 0, "Problems per sampler call (0: config.batch_size).")
  flags.DEFINE_integer("sc_samples", 0, "K for the self-consistency comparison (0: off).")
  flags.DEFINE_float("sc_temperature", 0.7, "Sampling temperature of that comparison.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  from score_jax import cli

  _define_flags()
  cli.run(main)  # input errors: one line on stderr, exit 2 (traceback with --verbosity=1)

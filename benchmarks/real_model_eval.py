r"""Two-turn evaluation of the real Gemma-3-270M base model on a GSM8K / MATH500 subset, timed.

  python benchmarks/real_model_eval.py --dataset=gsm8k \
      --source=../shared/data/gsm8k_test.jsonl --num_problems=32 --batch_size=8 \
      --workdir=/tmp/real_eval
  python benchmarks/real_model_eval.py --dataset=math500 \
      --source=../shared/data/math500_test.jsonl --num_problems=16 --batch_size=8 \
      --workdir=/tmp/real_eval

Runs exactly what `python -m score_jax.evaluate --config=configs/gemma3_270m_eval.py:<dataset>`
runs (same config, environment, sampler settings and `evaluate.evaluate_two_turns`) on the
first --num_problems test problems, greedy, two turns, on whatever JAX device is default
(CPU here). Prints the five metrics, the wall time split into
  load     tokenizer + tasks + GGUF import (dequantise) of the model,
  compile  XLA compilation of the sampler program (one per prompt bucket used),
  sample   device time of the two-turn sampler calls (compile excluded),
  grade    decoding + answer checking on the host (math-verify workers),
and generated tokens/s (useful tokens of both turns, stop tokens included, over sampling
time; rows keep decoding in lock-step until the last row of a batch stops). Writes
<workdir>/eval/<dataset>_test.{json,jsonl,md} with `evaluate.write_results`, plus
<workdir>/eval/<dataset>_test_timing.json.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import time

import jax
import numpy as np
from absl import app, flags

_DATASET = flags.DEFINE_enum("dataset", "gsm8k", ["gsm8k", "math500"], "Which test set.")
_SOURCE = flags.DEFINE_string(
    "source", None, "The dataset's test JSONL " "(e.g. ../shared/data/gsm8k_test.jsonl)."
)
_NUM = flags.DEFINE_integer("num_problems", 16, "Evaluate the first N test problems.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Problems per sampler call.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/real_model_eval", "Results go to <workdir>/eval/.")
_BUDGETS = flags.DEFINE_list(
    "turn_budgets",
    [],
    "Override the config's turn budgets, e.g. " "128,128 (default: the config's).",
)
_TEMPLATE = flags.DEFINE_enum(
    "chat_template",
    "",
    ["", "gemma", "plain"],
    "Override the " "config's chat template ('' = the config's, gemma).",
)


class _Timer:
  """Accumulates XLA compile time (jax.monitoring) and the host time of env.score."""

  def __init__(self):
    self.compile_s = 0.0
    self.grade_s = 0.0
    self.tokens = 0
    self.stopped = 0
    self.rows = 0
    self.lengths = collections.defaultdict(list)  # turn index -> lengths of the attempts
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event, duration, **_):
    if event.endswith("backend_compile_duration"):
      self.compile_s += duration

  def wrap_score(self, env, stop_ids):
    score = env.score
    calls = [0]

    def timed_score(tasks, attempts):
      t0 = time.perf_counter()
      out = score(tasks, attempts)
      self.grade_s += time.perf_counter() - t0
      turn = calls[0] % 2
      calls[0] += 1
      for a in attempts:
        self.tokens += len(a)
        self.rows += 1
        self.stopped += bool(a) and a[-1] in stop_ids
        self.lengths[turn].append(len(a))
      return out

    env.score = timed_score


def _load_config(arg: str):
  import importlib.util

  path = os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "..", "configs", "gemma3_270m_eval.py"
  )
  spec = importlib.util.spec_from_file_location("gemma3_270m_eval", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def main(argv):
  del argv
  if not _SOURCE.value:
    raise app.UsageError("--source is required: the dataset's test JSONL")
  from flax import nnx

  from score_jax import config_lib, evaluate
  from score_jax import metrics as metrics_lib
  from score_jax import build, sampler as sampler_lib

  timer = _Timer()
  config = _load_config(_DATASET.value)
  config.task.source = _SOURCE.value
  if _BUDGETS.value:
    try:
      config.sampler.turn_budgets = tuple(int(b) for b in _BUDGETS.value)
    except ValueError:
      raise ValueError(
          f"--turn_budgets={','.join(_BUDGETS.value)!r}: expected integers, " "e.g. 128,128"
      ) from None
  if _TEMPLATE.value:
    config.model.chat_template = _TEMPLATE.value
  config_lib.validate(config)

  t_start = time.perf_counter()
  env = build.environment(config)
  tasks = env.eval_tasks(_NUM.value)
  model = build.policy(config, env)
  _, params = nnx.split(model)
  jax.block_until_ready(params)
  load_s = time.perf_counter() - t_start

  cfg = build.sampler_config(config, env, greedy=True)  # evaluate.main's sampler settings
  sampler = sampler_lib.Sampler(model, cfg)
  timer.wrap_score(env, set(env.stop_ids))
  prompt_lens = [len(p) for p in env.prompt_tokens(tasks)]

  t0 = time.perf_counter()
  result = evaluate.evaluate_two_turns(sampler, params, env, tasks, batch_size=_BATCH.value)
  eval_s = time.perf_counter() - t0
  sample_s = eval_s - timer.compile_s - timer.grade_s
  total_s = time.perf_counter() - t_start

  path = evaluate.write_results(
      _WORKDIR.value, config.task.name, config.task.eval_split, result, name="gemma3-270m (base)"
  )
  timing = dict(
      dataset=_DATASET.value,
      chat_template=config.model.chat_template,
      num_problems=len(tasks),
      batch_size=_BATCH.value,
      turn_budgets=list(cfg.turn_budgets),
      prompt_buckets=list(cfg.prompt_buckets),
      instruction_len=cfg.instruction_len,
      prompt_tokens_max=max(prompt_lens),
      load_s=load_s,
      compile_s=timer.compile_s,
      sample_s=sample_s,
      grade_s=timer.grade_s,
      eval_s=eval_s,
      total_s=total_s,
      generated_tokens=timer.tokens,
      tokens_per_s=timer.tokens / sample_s if sample_s > 0 else float("nan"),
      rows_scored=timer.rows,
      rows_stopped=timer.stopped,
      mean_len_t1=float(np.mean(timer.lengths[0])),
      mean_len_t2=float(np.mean(timer.lengths[1])),
      device=str(jax.devices()[0]),
      cpu_count=os.cpu_count(),
      platform=platform.platform(),
  )
  with open(path.replace(".json", "_timing.json"), "w") as f:
    json.dump(timing, f, indent=2)
    f.write("\n")

  print(metrics_lib.format_table({"gemma3-270m (base)": result.metrics}))
  print(f"n={result.metrics['n']}  device={timing['device']}  cpus={timing['cpu_count']}")
  print(
      f"wall time: load {load_s:.1f} s | compile {timer.compile_s:.1f} s | sample "
      f"{sample_s:.1f} s | grade {timer.grade_s:.1f} s | total {total_s:.1f} s"
  )
  print(
      f"generated {timer.tokens} tokens ({timing['tokens_per_s']:.1f} tokens/s over sampling);"
      f" {timer.stopped}/{timer.rows} attempts ended with a stop token; mean length "
      f"t1 {timing['mean_len_t1']:.0f}, t2 {timing['mean_len_t2']:.0f} tokens"
  )
  reasons = collections.Counter(r for rec in result.records for r in rec["reasons"])
  print("reasons (both turns):", dict(reasons))
  print(f"wrote {path}")


if __name__ == "__main__":
  from score_jax import cli

  cli.run(main)  # bad input (flags, config): one line on stderr, exit 2

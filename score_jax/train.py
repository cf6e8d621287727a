r"""SCoRe training: rollout -> reference log-probs -> rewards -> sharded REINFORCE/KL step.

  python -m score_jax.train --config=configs/embedded.py --workdir=/tmp/score
  python -m score_jax.train --config=configs/gemma_math.py --workdir=gs://bucket/run \
      --config.loss.alpha=5

The command line: the config is validated and turned into parts (`score_jax.build`), and a
`score_jax.trainer.Trainer` runs them (the pure step is in `score_jax.train_step`). Rerunning
the same command resumes from the latest checkpoint in the workdir. The run's config is
written to <workdir>/config.json (process 0, at every start), which `score_jax.export` reads.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import jax

from score_jax import build, metrics as metrics_lib
from score_jax.trainer import Trainer

RUN_CONFIG = "config.json"  # <workdir>/config.json: the ConfigDict the run was started with


def write_run_config(config, workdir: str) -> str:
  """<workdir>/config.json: `config` as JSON (tuples as lists), atomically (tmp + rename)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_CONFIG)
  fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=workdir)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(config.to_json(indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def read_run_config(path: str):
  """The ConfigDict `write_run_config` wrote to `path` (lists where the config had tuples;
  `config_lib.validate` and `build` accept both)."""
  import ml_collections

  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv):
  del argv
  from absl import flags
  from ml_collections import config_flags  # noqa: F401 (flags registered below)

  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  build.preflight(config)  # every field and the dataset files, before JAX starts
  build.initialize_distributed(config)
  from score_jax import cli

  cli.configure_logging()  # quiet libraries unless --verbosity=1
  parts = build.parts(config)
  if jax.process_index() == 0:  # once the config proved good: a bad one leaves no workdir
    write_run_config(config, workdir)
  trainer = Trainer(parts, workdir)
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

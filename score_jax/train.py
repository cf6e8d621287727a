r"""SCoRe training: rollout -> reference log-probs -> rewards -> sharded REINFORCE/KL step.

  python -m score_jax.train --config=configs/embedded.py --workdir=/tmp/score
  python -m score_jax.train --config=configs/gemma_math.py --workdir=gs://bucket/run \
      --config.loss.alpha=5

The command line: the config is validated and turned into parts (`score_jax.build`), and a
`score_jax.trainer.Trainer` runs them (the pure step is in `score_jax.train_step`). Rerunning
the same command resumes from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import logging

from score_jax import build, metrics as metrics_lib
from score_jax.trainer import Trainer


def main(argv):
  del argv
  from absl import flags
  from ml_collections import config_flags  # noqa: F401 (flags registered below)

  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir
  build.preflight(config)  # every field and the dataset files, before JAX starts
  build.initialize_distributed(config)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  trainer = Trainer(build.parts(config), workdir)
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

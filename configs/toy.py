r"""Tiny CPU smoke run of the SCoRe machinery on a token-level toy task (seconds).

  python -m score_jax.train --config=configs/toy.py --workdir=/tmp/score_toy

A random 2-layer model learns a trivially learnable rule (see `ToyEnvironment`); used by the
tests, the Colab smoke test and as a template. `:runlocal` shortens it further.
"""

from score_jax.config_lib import default_config


def get_config(arg: str = ""):
  c = default_config()
  c.model.source = "random"
  c.model.family = "llama"
  c.task.name = "toy"
  c.task.num_eval = 16
  c.sampler.num_samples = 4
  c.sampler.prompt_buckets = (4,)
  c.sampler.turn_budgets = (3, 3)
  c.sampler.instruction_len = 2
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 0
  c.stages = ("stage1", "stage2")
  c.stage_steps = (4, 8)
  c.batch_size = 8
  c.mesh.data = -1
  c.checkpoint_every = 4
  c.eval_every = 0
  c.async_checkpoints = False
  if arg == "runlocal":
    c.stage_steps = (2, 2)
  elif arg:
    raise ValueError(f"configs/toy.py: unknown argument {arg!r} (expected '' or 'runlocal')")
  return c

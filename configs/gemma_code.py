r"""SCoRe on code: train on MBPP, evaluate on HumanEval; the paper's code hyper-parameters.

  python -m score_jax.train --config=configs/gemma_code.py --workdir=gs://BUCKET/score_code \
      --config.model.path=/path/to/hf/gemma-2-2b --config.task.source=/data/mbpp.jsonl

Paper (appendix): Adam, lr 1e-5, 1500 steps, batch 128, temperature 1.0, alpha 10,
beta1 0.01, beta2 0.25. Training reward = all MBPP tests pass in the sandbox. Periodic
evaluation uses MBPP's validation split; run `score_jax.evaluate` with
--config.task.name=humaneval for HumanEval.
"""

from score_jax.config_lib import default_config


def get_config(arg: str = ""):
  c = default_config()
  c.model.source = "hf"
  c.model.family = "gemma2"
  c.model.dtype = "bfloat16"
  c.task.name = "mbpp"
  c.task.train_split = "train"
  c.task.eval_split = "validation"
  c.task.num_eval = 90
  c.sampler.temperature = 1.0
  c.sampler.num_samples = 4
  c.sampler.prompt_buckets = (512, 1024)
  c.sampler.turn_budgets = (512, 512)
  c.sampler.instruction_len = 96
  c.loss.alpha = 10.0
  c.loss.beta1 = 0.01
  c.loss.beta2 = 0.25
  c.optim.learning_rate = 1e-5
  c.optim.warmup_steps = 25
  c.stages = ("stage1", "stage2")
  c.stage_steps = (500, 1000)
  c.batch_size = 32
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.checkpoint_every = 100
  c.eval_every = 250
  if arg:
    raise ValueError(f"configs/gemma_code.py: unknown argument {arg!r}")
  return c

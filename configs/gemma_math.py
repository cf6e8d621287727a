r"""SCoRe on MATH with a Gemma-class model on TPU: the paper's MATH hyper-parameters.

  python -m score_jax.train --config=configs/gemma_math.py --workdir=gs://BUCKET/score_math \
      --config.model.path=/path/to/hf/gemma-2-2b --config.task.source=/data/math_train.jsonl \
      --config.task.eval_source=/data/math500_test.jsonl

Paper (appendix): Adam, lr 5e-6, 3000 steps, batch 512, temperature 1.0, alpha 10,
beta1 0.01, beta2 0.1; evaluation greedy. The split of steps between Stage I and Stage II
and the samples per prompt are not given: we use 1000 + 2000 steps and 4 samples per
prompt (128 prompts x 4 = 512 rows). `:runlocal` is a few-step CPU check with the offline
Gemma-3-270M on the files given by --config.task.source (e.g. ../shared/data).
"""

from score_jax.config_lib import default_config


def get_config(arg: str = ""):
  c = default_config()
  c.model.source = "hf"
  c.model.family = "gemma2"
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.task.name = "math"
  c.task.train_split = "train"
  c.task.eval_split = "test"
  c.task.num_eval = 500
  c.sampler.temperature = 1.0
  c.sampler.num_samples = 4
  c.sampler.prompt_buckets = (256, 512)
  c.sampler.turn_budgets = (768, 768)
  c.sampler.instruction_len = 128
  c.loss.alpha = 10.0
  c.loss.beta1 = 0.01
  c.loss.beta2 = 0.1
  c.optim.learning_rate = 5e-6
  c.optim.warmup_steps = 50
  c.stages = ("stage1", "stage2")
  c.stage_steps = (1000, 2000)
  c.batch_size = 128
  c.micro_batch_size = 64
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  c.checkpoint_every = 100
  c.eval_every = 250
  if arg == "runlocal":
    c.model.source = "gemma3_270m"
    c.model.dtype = "float32"
    c.model.family = "gemma3"
    c.task.name = "math500"
    c.task.train_split = "test"
    c.task.num_eval = 4
    c.sampler.num_samples = 2
    c.sampler.prompt_buckets = (256,)
    c.sampler.turn_budgets = (32, 32)
    c.stage_steps = (1, 1)
    c.batch_size = 2
    c.micro_batch_size = 0
    c.mesh.fsdp = 1
    c.mesh.data = 1
    c.checkpoint_every = 1
    c.eval_every = 0
  elif arg:
    raise ValueError(f"configs/gemma_math.py: unknown argument {arg!r} ('' or 'runlocal')")
  return c

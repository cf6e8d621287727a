"""Prompt strings and chat-template rendering."""

import re
from pathlib import Path

import pytest

from score_jax import prompts
from score_jax.data import Task

PAPER = Path(__file__).resolve().parents[2] / "shared" / "PAPER.md"

MATH_TASK = Task(
    id="m/0", prompt=prompts.format_math_prompt("What is $1+1$?"), reference="2", kind="math"
)
CODE_TASK = Task(
    id="c/0", prompt='def f(x):\n    """Return x."""\n', reference="assert f(1) == 1", kind="code"
)
I_MATH = prompts.MATH_CORRECTION_INSTRUCTION
I_CODE = prompts.CODE_CORRECTION_INSTRUCTION


def test_paper_strings_verbatim():
  assert prompts.MATH_INSTRUCTION == (
      "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
      "thinking step by step. At the end of the Solution, when you give your final answer, write it in "
      'the form "Final Answer: The final answer is $answer$. I hope it is correct."'
  )
  assert I_MATH == (
      "There might be an error in the solution above because of lack of understanding of the question. "
      "Please correct the error, if any, and rewrite the solution. Only output the final solution! At the "
      'end of the Solution, when you give your final answer, write it in the form "Final Answer: The final '
      'answer is $answer$. I hope it is correct."'
  )
  assert I_CODE == (
      "There might be an error in the code above because of lack of understanding of the question. "
      "Please correct the error, if any, and rewrite the solution. Only output the final correct Python program!"
  )
  assert prompts.correction_instruction("math") == prompts.correction_instruction("gsm8k") == I_MATH
  assert prompts.correction_instruction("code") == I_CODE
  with pytest.raises(ValueError, match="unknown task kind"):
    prompts.correction_instruction("poetry")


@pytest.mark.skipif(not PAPER.exists(), reason="../shared/PAPER.md not present")
def test_strings_match_paper_md():
  text = re.sub(r"\s+", " ", PAPER.read_text())
  for s in (prompts.MATH_INSTRUCTION, I_MATH, I_CODE):
    assert s in text


def test_math_user_text():
  assert MATH_TASK.prompt == prompts.MATH_INSTRUCTION + "\n\nProblem:\nWhat is $1+1$?"


def test_gemma():
  x1 = prompts.render_turn1(MATH_TASK, "gemma")
  assert x1 == f"<bos><start_of_turn>user\n{MATH_TASK.prompt}<end_of_turn>\n<start_of_turn>model\n"
  y1 = "1+1=3. Final Answer: The final answer is $3$. I hope it is correct."
  x2 = prompts.render_turn2(MATH_TASK, y1, "gemma")
  assert x2 == (
      f"{x1}{y1}<end_of_turn>\n<start_of_turn>user\n{I_MATH}<end_of_turn>\n<start_of_turn>model\n"
  )
  assert prompts.render_turn2_suffix("code", "gemma") == (
      f"<end_of_turn>\n<start_of_turn>user\n{I_CODE}<end_of_turn>\n<start_of_turn>model\n"
  )
  assert prompts.end_of_turn("gemma") == "<end_of_turn>"
  assert prompts.bos_text("gemma") == "<bos>"
  assert not prompts.render_turn1(MATH_TASK, "gemma", add_bos=False).startswith("<bos>")


def test_llama3():
  x1 = prompts.render_turn1(CODE_TASK, "llama3")
  assert x1 == (
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
      f"{CODE_TASK.prompt}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  assert prompts.render_turn2_suffix("code", "llama3") == (
      "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
      f"{I_CODE}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
  )
  assert prompts.end_of_turn("llama3") == "<|eot_id|>"
  sys_x1 = prompts.render_turn1(CODE_TASK, "llama3", system="Be brief.")
  assert sys_x1.startswith(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user"
  )


def test_qwen2_chatml():
  x1 = prompts.render_turn1(MATH_TASK, "qwen2")
  assert x1 == f"<|im_start|>user\n{MATH_TASK.prompt}<|im_end|>\n<|im_start|>assistant\n"
  assert prompts.render_turn2_suffix("math", "qwen2") == (
      f"<|im_end|>\n<|im_start|>user\n{I_MATH}<|im_end|>\n<|im_start|>assistant\n"
  )
  assert prompts.end_of_turn("qwen2") == "<|im_end|>" and prompts.bos_text("qwen2") == ""
  assert prompts.render_turn1(MATH_TASK, "qwen2", system="S").startswith(
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
  )


def test_plain():
  assert prompts.render_turn1(MATH_TASK, "plain") == MATH_TASK.prompt + "\n\nSolution:"
  assert prompts.render_turn1(CODE_TASK, "plain") == CODE_TASK.prompt
  assert prompts.render_turn2_suffix("math", "plain") == f"\n\n{I_MATH}\n\nSolution:"
  assert prompts.render_turn2_suffix("code", "plain") == f"\n\n{I_CODE}\n"
  assert prompts.end_of_turn("plain") == ""
  assert "\n\nProblem:" in prompts.stop_strings("plain", "math")


@pytest.mark.parametrize("family", prompts.FAMILIES)
@pytest.mark.parametrize("task", [MATH_TASK, CODE_TASK], ids=["math", "code"])
def test_turn2_is_turn1_plus_y1_plus_suffix(family, task):
  y1 = "ANSWER"
  x1 = prompts.render_turn1(task, family)
  assert task.prompt in x1
  suffix = prompts.render_turn2_suffix(task.kind, family)
  assert prompts.render_turn2(task, y1, family) == x1 + y1 + suffix
  assert suffix.startswith(prompts.end_of_turn(family))
  assert prompts.correction_instruction(task.kind) in suffix
  if prompts.end_of_turn(family):
    assert prompts.stop_strings(family)[0] == prompts.end_of_turn(family)


def test_unknown_family():
  with pytest.raises(ValueError, match="gemma"):
    prompts.render_turn1(MATH_TASK, "gpt")
  with pytest.raises(ValueError):
    prompts.end_of_turn("gpt")


def test_mbpp_format_and_code_stops():
  p = prompts.format_mbpp_prompt(
      "Add numbers.",
      ["assert add(1, 2) == 3"],
      [("Negate.", ["assert neg(1) == -1"], "def neg(x):\r\n  return -x")],
  )
  assert p == (
      "You are an expert Python programmer, and here is your task: Negate. Your code should pass these tests:"
      "\n\nassert neg(1) == -1\n[BEGIN]\ndef neg(x):\n  return -x\n[DONE]\n"
      "You are an expert Python programmer, and here is your task: Add numbers. Your code should pass these tests:"
      "\n\nassert add(1, 2) == 3\n[BEGIN]\n"
  )
  assert "[DONE]" in prompts.stop_strings("gemma", "code")


def test_format_fingerprint_stable():
  assert prompts.format_fingerprint() == prompts.format_fingerprint()
  assert len(prompts.format_fingerprint()) == 16


@pytest.mark.parametrize("family", ["gemma", "llama3", "qwen2"])
def test_suffix_without_end_of_turn_for_samplers_that_keep_the_stop_token(family):
  eot = prompts.end_of_turn(family)
  full = prompts.render_turn2_suffix("math", family)
  assert eot + prompts.render_turn2_suffix("math", family, include_end_of_turn=False) == full

"""Prompt text for SCoRe: the turn-1 problem formats, the paper's self-correction
instructions, and chat-template rendering per model family.

Everything here is a pure function of strings.  The data loaders
(`score_jax.data.tasks`) call the ``format_*`` functions once to store a
family-independent *user text* in ``Task.prompt``; the sampler / evaluator
then wraps that text in a model family's chat template with `render_turn1`
and, after the first attempt ``y1``, appends `render_turn2_suffix`:

    x1 = render_turn1(task, family)
    x2 = x1 + y1 + render_turn2_suffix(task.kind, family)

``y1`` is the bare response text, *without* the end-of-turn marker: the
suffix starts with `end_of_turn(family)` (for Gemma the whole turn-2 prompt is
``{x1}{y1}<end_of_turn>\\n<start_of_turn>user\\n{instruction}<end_of_turn>\\n
<start_of_turn>model\\n``).  A sampler that keeps the model's own end-of-turn
token at the end of ``y1`` appends
``render_turn2_suffix(kind, family, include_end_of_turn=False)`` instead.

Families: ``gemma``, ``llama3``, ``qwen2`` (ChatML) and ``plain`` (no chat
template: "Problem: ...\\n\\nSolution:" style, for base models).  The BOS
*text* (``<bos>``, ``<|begin_of_text|>``) is included by `render_turn1` when
``add_bos=True`` (the default) so the tokenizer must then not add another;
`bos_text` exposes it.  ``plain`` never emits BOS text (leave it to the
tokenizer).
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence

__all__ = [
    "FAMILIES",
    "KINDS",
    "MATH_INSTRUCTION",
    "MATH_CORRECTION_INSTRUCTION",
    "CODE_CORRECTION_INSTRUCTION",
    "MBPP_TEMPLATE",
    "format_math_prompt",
    "format_mbpp_example",
    "format_mbpp_prompt",
    "format_humaneval_prompt",
    "correction_instruction",
    "bos_text",
    "end_of_turn",
    "stop_strings",
    "render_user_turn",
    "render_turn1",
    "render_turn2_suffix",
    "render_turn2",
    "format_fingerprint",
]

FAMILIES: tuple[str, ...] = ("gemma", "llama3", "qwen2", "plain")
KINDS: tuple[str, ...] = ("math", "gsm8k", "code")

# --- The paper's prompts (Kumar et al., 2024: its MATH and code prompts) ------
MATH_INSTRUCTION = (
    "You are a math expert. When you respond, respond only with the Solution of the "
    "final Problem, thinking step by step. At the end of the Solution, when you give "
    'your final answer, write it in the form "Final Answer: The final answer is '
    '$answer$. I hope it is correct."'
)
MATH_CORRECTION_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding "
    "of the question. Please correct the error, if any, and rewrite the solution. "
    "Only output the final solution! At the end of the Solution, when you give your "
    'final answer, write it in the form "Final Answer: The final answer is $answer$. '
    'I hope it is correct."'
)
CODE_CORRECTION_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of "
    "the question. Please correct the error, if any, and rewrite the solution. Only "
    "output the final correct Python program!"
)

# MBPP 3-shot format of Austin et al. (2021) (google-research/mbpp/README.md):
# "You are an expert Python programmer, and here is your task: {prompt} Your code
# should pass these tests:\n\n{tests}\n[BEGIN]\n{code}\n[DONE]", few-shot task ids
# 2, 3, 4.  Examples are separated by a newline; the query ends after "[BEGIN]\n".
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)
MBPP_FEWSHOT_IDS: tuple[int, ...] = (2, 3, 4)
MBPP_BEGIN, MBPP_DONE = "[BEGIN]", "[DONE]"

# Turn-1 user text for math is the instruction, then the problem.  The "plain"
# family appends the answer cue "\n\nSolution:" (chat families do not: the
# assistant turn is the cue).
_MATH_USER = "{instruction}\n\nProblem:\n{question}"
_PLAIN_ANSWER_CUE = {"math": "\n\nSolution:", "gsm8k": "\n\nSolution:", "code": ""}


class _TaskLike(Protocol):
  prompt: str
  kind: str


def _check_family(family: str) -> None:
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(KINDS)}")


# --- Turn-1 user texts (family independent; stored in Task.prompt) -------------
def format_math_prompt(question: str) -> str:
  """Zero-shot MATH / GSM8K user text: the paper's instruction + the problem."""
  return _MATH_USER.format(instruction=MATH_INSTRUCTION, question=question.strip())


def format_mbpp_example(text: str, tests: Sequence[str], code: str | None = None) -> str:
  """One MBPP block; with ``code`` it is a solved few-shot example ending in [DONE]."""
  block = MBPP_TEMPLATE.format(text=text.strip(), tests="\n".join(t.strip() for t in tests))
  if code is not None:
    block += code.replace("\r\n", "\n").strip("\n") + "\n" + MBPP_DONE
  return block


def format_mbpp_prompt(
    text: str, tests: Sequence[str], fewshot: Sequence[tuple[str, Sequence[str], str]] = ()
) -> str:
  """Standard MBPP k-shot prompt; ``fewshot`` = [(text, tests, code), ...]."""
  shots = [format_mbpp_example(t, ts, c) for t, ts, c in fewshot]
  return "\n".join(shots + [format_mbpp_example(text, tests)])


def format_humaneval_prompt(prompt: str) -> str:
  """HumanEval is zero-shot: the user text is the signature + docstring itself."""
  return prompt


def correction_instruction(kind: str) -> str:
  """The paper's self-correction instruction for ``kind`` ('math'|'gsm8k'|'code')."""
  _check_kind(kind)
  return CODE_CORRECTION_INSTRUCTION if kind == "code" else MATH_CORRECTION_INSTRUCTION


# --- Chat templates --------------------------------------------------------------
_BOS = {"gemma": "<bos>", "llama3": "<|begin_of_text|>", "qwen2": "", "plain": ""}
_EOT = {"gemma": "<end_of_turn>", "llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "plain": ""}
# (user-turn opener, closer-after-eot that opens the assistant turn)
_USER_OPEN = {
    "gemma": "<start_of_turn>user\n",
    "llama3": "<|start_header_id|>user<|end_header_id|>\n\n",
    "qwen2": "<|im_start|>user\n",
    "plain": "",
}
_ASSISTANT_OPEN = {
    "gemma": "\n<start_of_turn>model\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "qwen2": "\n<|im_start|>assistant\n",
    "plain": "",
}
_AFTER_EOT = {"gemma": "\n", "llama3": "", "qwen2": "\n", "plain": ""}


def bos_text(family: str) -> str:
  """BOS as text for ``family`` ('' for qwen2 and plain)."""
  _check_family(family)
  return _BOS[family]


def end_of_turn(family: str) -> str:
  """End-of-turn marker the model emits after its answer ('' for plain)."""
  _check_family(family)
  return _EOT[family]


def stop_strings(family: str, kind: str | None = None) -> list[str]:
  """Strings at which a sampler should stop a response (besides EOS)."""
  _check_family(family)
  stops = [_EOT[family]] if _EOT[family] else []
  if family == "plain":
    stops += ["\n\nProblem:"]
  if kind == "code":
    stops.append(MBPP_DONE)
  return stops


def _system_block(family: str, system: str | None) -> str:
  if not system:
    return ""
  if family == "llama3":
    return f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
  if family == "qwen2":
    return f"<|im_start|>system\n{system}<|im_end|>\n"
  if family == "plain":
    return system + "\n\n"
  raise ValueError("gemma has no system turn; prepend the system text to the user text")


def render_user_turn(
    text: str, family: str, *, add_bos: bool = True, system: str | None = None
) -> str:
  """A single user turn in ``family``'s template, ending where the model answers."""
  _check_family(family)
  if family == "plain":
    return _system_block(family, system) + text
  bos = _BOS[family] if add_bos else ""
  return (
      bos
      + _system_block(family, system)
      + _USER_OPEN[family]
      + text
      + _EOT[family]
      + _ASSISTANT_OPEN[family]
  )


def render_turn1(
    task: _TaskLike, family: str, *, add_bos: bool = True, system: str | None = None
) -> str:
  """The turn-1 prompt x1 for ``task`` (uses ``task.prompt`` and ``task.kind``)."""
  _check_kind(task.kind)
  text = task.prompt
  if family == "plain":
    text += _PLAIN_ANSWER_CUE[task.kind]
  return render_user_turn(text, family, add_bos=add_bos, system=system)


def render_turn2_suffix(
    kind: str, family: str, *, include_end_of_turn: bool = True, instruction: str | None = None
) -> str:
  """Text appended right after y1 to form x2 = x1 + y1 + suffix.

  Closes the model turn, adds the self-correction instruction as a user turn and
  opens the next model turn.  ``include_end_of_turn=False`` drops the leading
  `end_of_turn` marker, for samplers whose y1 already ends with the model's own
  end-of-turn token (score_jax.sampler keeps the stop token in the turn).
  ``instruction`` replaces the paper's instruction for ``kind`` (e.g. for a task
  family of one's own).
  """
  _check_family(family)
  if instruction is None:
    instruction = correction_instruction(kind)
  if family == "plain":
    return "\n\n" + instruction + _PLAIN_ANSWER_CUE[kind] + ("" if kind != "code" else "\n")
  return (
      (_EOT[family] if include_end_of_turn else "")
      + _AFTER_EOT[family]
      + _USER_OPEN[family]
      + instruction
      + _EOT[family]
      + _ASSISTANT_OPEN[family]
  )


def render_turn2(
    task: _TaskLike, y1: str, family: str, *, add_bos: bool = True, system: str | None = None
) -> str:
  """The full turn-2 prompt x2 = [x1, y1, instruction] as text."""
  return (
      render_turn1(task, family, add_bos=add_bos, system=system)
      + y1
      + render_turn2_suffix(task.kind, family)
  )


def format_fingerprint() -> str:
  """Hash of every template string that is baked into prepared datasets.

  The TFDS builders store it so a change to the prompt formats rebuilds them.
  """
  parts = [MATH_INSTRUCTION, _MATH_USER, MBPP_TEMPLATE, MBPP_DONE, repr(MBPP_FEWSHOT_IDS)]
  return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]

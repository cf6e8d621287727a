"""Math grader: answer extraction, equivalence table, and the hard time limit."""

import json
import time

import numpy as np
import pytest

from score_jax.rewards import math_grader as mg
from score_jax.rewards.types import (
    CORRECT,
    INVALID_REFERENCE,
    NO_ANSWER,
    TIMEOUT,
    WRONG_ANSWER,
    RewardResult,
)


def final(ans: str) -> str:
  """A response in the paper's answer format."""
  return (
      "Let me think step by step. First we simplify.\n"
      f"Final Answer: The final answer is ${ans}$. I hope it is correct."
  )


def boxed(ans: str) -> str:
  return f"So we get $x = 7$ at first, but after checking, the answer is $\\boxed{{{ans}}}$."


MATH_SOLUTION = (
    "We have $\\frac{2}{4} = \\frac{1}{2}$, and $\\{1,2\\}$ is a set. "
    "Therefore the answer is $\\boxed{\\frac{1}{2}}$."
)

# (response, reference, expected reward).  Mode 'math'.
MATH_CASES = [
    # fractions / decimals
    (final("\\frac12"), "0.5", 1),
    (final("0.5"), "\\frac{1}{2}", 1),
    (final("\\dfrac{1}{2}"), "\\frac12", 1),
    (boxed("1/2"), "\\tfrac{1}{2}", 1),
    (final("\\frac{2}{4}"), "\\frac{1}{2}", 1),
    (final("0.51"), "\\frac{1}{2}", 0),
    (final("\\frac{1}{3}"), "\\frac{1}{2}", 0),
    (final("-\\frac{3}{4}"), "-0.75", 1),
    (final("\\frac{3}{4}"), "-0.75", 0),
    # radicals
    (final("2\\sqrt{2}"), "\\sqrt{8}", 1),
    (final("\\frac{\\sqrt{2}}{2}"), "\\frac{1}{\\sqrt{2}}", 1),
    (final("\\sqrt{3}"), "\\sqrt{2}", 0),
    (boxed("3\\sqrt{5}"), "\\sqrt{45}", 1),
    (boxed("\\sqrt[3]{8}"), "2", 1),
    # intervals
    (final("[1,3)"), "[1, 3)", 1),
    (final("[1,3]"), "[1,3)", 0),
    (final("(-\\infty, 2]"), "(-\\infty,2]", 1),
    (final("(-\\infty, 2)"), "(-\\infty,2]", 0),
    (final("(-\\infty,-1)\\cup(1,\\infty)"), "(-\\infty,-1) \\cup (1,\\infty)", 1),
    # sets and root lists
    (final("\\{1,2\\}"), "\\{2,1\\}", 1),
    (final("\\{1,3\\}"), "\\{1,2\\}", 0),
    (final("2, 3"), "3,2", 1),
    (final("-2, 3"), "3, -2", 1),
    (final("2, 4"), "2, 3", 0),
    (final("2"), "2, 3", 0),
    (final("1,5"), "15", 0),  # a list of two roots, not fifteen
    (final("1, 5"), "5,1", 1),
    # tuples / points
    (final("(1, 2)"), "(1,2)", 1),
    (final("(2, 1)"), "(1,2)", 0),
    (final("(1,2,3)"), "(1, 2, 3)", 1),
    (final("(1,3,2)"), "(1, 2, 3)", 0),
    # units and \text{}
    (final("5\\text{ cm}"), "5", 1),
    (final("5"), "5\\text{ cm}", 1),
    (final("\\text{5 cm}"), "5", 1),
    (final("12\\text{ inches}"), "12", 1),
    (final("6\\text{ cm}"), "5\\text{ cm}", 0),
    (final("\\text{Monday}"), "\\text{Monday}", 1),
    (final("\\text{Tuesday}"), "\\text{Monday}", 0),
    (final("\\$18.90"), "18.90", 1),
    # degrees
    (final("30^\\circ"), "30", 1),
    (final("30"), "30^\\circ", 1),
    (final("30^{\\circ}"), "30", 1),
    (final("60^\\circ"), "30^\\circ", 0),
    # percentages
    (final("25\\%"), "25", 1),
    (final("25"), "25\\%", 1),
    (final("20\\%"), "25\\%", 0),
    # multiple choice
    (final("(B)"), "B", 1),
    (final("B"), "\\text{(B)}", 1),
    (final("\\text{(C)}"), "\\text{(B)}", 0),
    (final("C"), "B", 0),
    # equations vs values
    (final("x=5"), "5", 1),
    (final("5"), "x=5", 1),
    (final("x = 6"), "5", 0),
    (final("y = 2x+3"), "y=2x+3", 1),
    # symbolic expressions
    (final("x^2+2x+1"), "(x+1)^2", 1),
    (final("x^2+1"), "(x+1)^2", 0),
    (final("\\frac{\\pi}{2}"), "\\pi/2", 1),
    (final("2\\pi"), "\\pi", 0),
    (final("3+2i"), "3 + 2i", 1),
    (final("3-2i"), "3+2i", 0),
    (final("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 1),
    (final("\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"), "\\begin{pmatrix}1\\\\2\\end{pmatrix}", 0),
    # integers with separators, plain numbers
    (final("1{,}000"), "1000", 1),
    (final("1,000"), "1000", 1),
    (final("10.0"), "10", 1),
    (final("3.5"), "3", 0),
    (final("-4"), "4", 0),
    # references that are whole MATH solutions
    (final("0.5"), MATH_SOLUTION, 1),
    (final("\\{1, 2\\}"), MATH_SOLUTION, 0),
    # where the answer is taken from
    (boxed("\\frac{1}{2}") + " Earlier I wrote \\boxed{3}.", "3", 1),  # last box wins
    (boxed("7") + "\nFinal Answer: The final answer is $8$. I hope it is correct.", "8", 1),
    ("\\fbox{42}", "42", 1),
    ("The answer is \\boxed 5.", "5", 1),
    ("The final answer is 5.", "5", 1),
    ("Final Answer: The final answer is $\\boxed{5}$. I hope it is correct.", "5", 1),
    # malformed and empty outputs
    ("", "5", 0),
    ("I don't know.", "5", 0),
    ("The answer is 5.", "5", 0),  # no box, no final-answer phrase
    ("\\boxed{5", "5", 0),  # cut off
    (final(""), "5", 0),
    (final("}{"), "5", 0),
    (final("\\frac{1}{"), "\\frac{1}{2}", 0),
    (final("5"), "", 0),
]

GSM8K_CASES = [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7", 1),
    ("She has 3 + 4 = 7 apples.\n#### 8", "Natalia sold 48/2 = 24 clips.\n#### 72", 0),
    ("So 48 + 24 = 72.\n#### 72", "Natalia sold 48/2 = 24 clips.\n#### 72", 1),
    ("Total: $1,200 dollars.\n#### 1,200", "1200", 1),
    ("It costs 5 + 13 = 18 dollars.", "18", 1),  # last number
    ("It costs 18 dollars, not 5.", "18", 0),  # last number is 5
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18", 1),
    ("The total is \\boxed{18.00}", "18", 1),
    ("No numbers at all.", "18", 0),
    ("#### -3", "-3", 1),
    ("The answer is 0.5", "#### .5", 1),
]


def _grade(cases, mode):
  with mg.MathGrader(workers=2, timeout_s=5.0) as grader:
    return grader.grade([c[0] for c in cases], [c[1] for c in cases], mode=mode)


@pytest.fixture(scope="module")
def grader():
  with mg.MathGrader(workers=2, timeout_s=3.0) as g:
    yield g


def test_math_table(grader):
  assert len(MATH_CASES) >= 60
  result = grader.grade([c[0] for c in MATH_CASES], [c[1] for c in MATH_CASES], mode="math")
  assert isinstance(result, RewardResult)
  assert result.rewards.dtype == np.float32 and result.rewards.shape == (len(MATH_CASES),)
  wrong = [
      (resp[-60:], ref[-40:], exp, reason)
      for (resp, ref, exp), got, reason in zip(MATH_CASES, result.rewards, result.reasons)
      if got != exp
  ]
  assert not wrong, wrong
  for (_, _, exp), reason in zip(MATH_CASES, result.reasons):
    assert (reason == CORRECT) == bool(exp)


def test_gsm8k_table(grader):
  result = grader.grade([c[0] for c in GSM8K_CASES], [c[1] for c in GSM8K_CASES], mode="gsm8k")
  assert result.rewards.tolist() == [float(c[2]) for c in GSM8K_CASES], result.reasons


def test_reasons(grader):
  result = grader.grade(
      ["", "no answer here", final("3"), final("2"), final("2")],
      ["2", "2", "2", "2", "   "],
  )
  assert result.reasons == [NO_ANSWER, NO_ANSWER, WRONG_ANSWER, CORRECT, INVALID_REFERENCE]


@pytest.mark.parametrize(
    "text,mode,expected",
    [
        ("a \\boxed{\\frac{1}{2}} b \\boxed{\\{1,2\\}}", "math", "\\{1,2\\}"),
        ("\\boxed{\\text{(A)}}", "math", "\\text{(A)}"),
        ("\\boxed {3}", "math", "3"),
        ("The final answer is $\\$5$. I hope it is correct.", "math", "\\$5"),
        ("the final answer is: $$x=2$$", "math", "x=2"),
        ("The final answer is 7. I hope it is correct.", "math", "7"),
        ("nothing", "math", None),
        ("\\boxed{", "math", None),
        ("a 1,234 b 56.5.", "gsm8k", "56.5"),
        ("#### 1,234\nThe end 99", "gsm8k", "1234"),
        ("Answer \\boxed{-12}. Check: 12", "gsm8k", "-12"),
        ("", "gsm8k", None),
    ],
)
def test_extract_answer(text, mode, expected):
  assert mg.extract_answer(text, mode) == expected


BOXED_CASES = [
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),  # nested braces
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces
    ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),  # a lone escaped brace
    ("\\boxed{a \\\\}", "a \\\\"),  # a line break \\, then the closing brace
    ("first \\boxed{1}, then \\fbox{2}, at last \\boxed{3}.", "3"),  # the last one wins
    ("\\fbox{7}", "7"),
    ("The answer is \\boxed 5.", "5"),  # bare token, sentence's period dropped
    ("so $\\boxed 9$", "9"),
    ("\\boxed {3}", "3"),
    ("\\boxed \n4", "4"),
    ("\\boxed{ 2 }", "2"),
    ("\\boxed5", None),
    ("\\boxed{unbalanced", None),
    ("\\boxed{\\}", None),  # only an escaped brace: cut off
    ("no box", None),
]


@pytest.mark.parametrize("text,expected", BOXED_CASES)
def test_extract_boxed(text, expected):
  assert mg.extract_boxed(text) == expected


def test_reference_and_response_parse_alike(tmp_path):
  # The dataset loader and the grader share one extraction: a reference solution and
  # a response with the same box give the same answer.
  from score_jax import data

  assert data.extract_boxed is mg.extract_boxed
  cases = [(t, want) for t, want in BOXED_CASES if want]
  with open(tmp_path / "m.jsonl", "w") as f:
    for i, (text, _) in enumerate(cases):
      f.write(json.dumps({"problem": f"q{i}", "solution": f"We get {text}"}) + "\n")
  tasks = data.load_tasks("math500", tmp_path / "m.jsonl", "test")
  assert [t.reference for t in tasks] == [want for _, want in cases]
  for task, (text, _) in zip(tasks, cases):
    assert mg.extract_answer(f"Hence {text}", "math") == task.reference
    assert mg.reference_answer(task.solution, "math") == task.reference


def test_reference_answer():
  assert mg.reference_answer(MATH_SOLUTION, "math") == "\\frac{1}{2}"
  assert mg.reference_answer("$\\frac{3}{4}$", "math") == "\\frac{3}{4}"
  assert mg.reference_answer("He pays 2*3=6.\n#### 6", "gsm8k") == "6"
  assert mg.reference_answer("  ", "math") is None


def test_normalize_answer():
  assert mg.normalize_answer("$30^{\\circ}$") == "30"
  assert mg.normalize_answer("\\text{5 cm}") == "5"
  assert mg.normalize_answer("\\text{1,000 dollars}") == "1,000"
  assert mg.normalize_answer("x \\rightarrow 1") == "x \\rightarrow 1"


# A power tower sympy cannot finish: math-verify's parse + verify of it against
# "5" with its own timeouts disabled was still running when killed after 20 s
# (checked by hand; so were 10^{10^{10}} and (x+1)^{100000}).
PATHOLOGICAL = final("9^{9^{9^{9}}}")


def test_pathological_times_out_quickly_and_pool_survives():
  with mg.MathGrader(workers=2, timeout_s=1.5) as grader:
    grader.grade([final("\\frac{2}{4}")], ["0.5"])  # start the pool outside the timed part
    t0 = time.monotonic()
    result = grader.grade(
        [PATHOLOGICAL, final("\\frac12"), PATHOLOGICAL, final("3")], ["5", "0.5", "5", "3"]
    )
    elapsed = time.monotonic() - t0
    assert result.reasons == [TIMEOUT, CORRECT, TIMEOUT, CORRECT]
    assert elapsed < 5.0, elapsed
    # The pool still works afterwards.
    assert grader.grade([final("2")], ["2"]).reasons == [CORRECT]


def test_parent_deadline_kills_a_stuck_worker():
  """A worker that never answers (stuck where SIGALRM cannot reach) is killed
  at the parent's deadline and replaced."""
  with mg.MathGrader(workers=1, timeout_s=1.0) as grader:
    grader.grade([final("\\frac{2}{4}")], ["0.5"])
    assert grader._pool[0].ready
    parent, child = grader._ctx.Pipe()
    proc = grader._ctx.Process(target=time.sleep, args=(60,), daemon=True)
    proc.start()
    grader._pool[0].kill()
    grader._pool[0] = mg._Worker(proc, parent, ready=True)
    t0 = time.monotonic()
    result = grader.grade([final("x^2")], ["y^2"])
    assert result.reasons == [TIMEOUT]
    assert time.monotonic() - t0 < 3.0
    assert not proc.is_alive()
    assert grader.grade([final("x^2")], ["x^2"]).reasons == [CORRECT]
    child.close()


def test_grade_math_module_function():
  result = mg.grade_math([final("4")], ["4"], mode="math")
  assert result.reasons == [CORRECT]


def test_bad_arguments(grader):
  with pytest.raises(ValueError):
    grader.grade(["1"], [])
  with pytest.raises(ValueError):
    grader.grade(["1"], ["1"], mode="physics")

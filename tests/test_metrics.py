"""The paper's five self-correction metrics, their tables and the edit distance, on hand-made
cases whose expected numbers are worked out by hand in the comments."""

import itertools

import numpy as np
import pytest

from score_jax import metrics

FIVE = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")


def _check(got, n, acc1, acc2, i2c, c2i):
  assert set(got) == {"n", *FIVE}
  assert got["n"] == n and isinstance(got["n"], int)
  expect = dict(
      accuracy_t1=acc1,
      accuracy_t2=acc2,
      delta_t1_t2=acc2 - acc1,
      delta_i_to_c=i2c,
      delta_c_to_i=c2i,
  )
  for k, v in expect.items():
    assert isinstance(got[k], float), (k, type(got[k]))
    assert got[k] == pytest.approx(v, abs=1e-12), (k, got[k], v)
  # The identity of the paper: Δ(t1,t2) = Δ^{i→c} − Δ^{c→i}.
  assert got["delta_t1_t2"] == pytest.approx(got["delta_i_to_c"] - got["delta_c_to_i"], abs=1e-12)


# --------------------------------------------------------------------------- five metrics


@pytest.mark.parametrize(
    "r1, r2, expect",
    [
        # 4 problems: p0 c->c, p1 i->c, p2 i->i, p3 c->i. Acc 2/4 both turns, one of each flip.
        ([1, 0, 0, 1], [1, 1, 0, 0], (4, 0.5, 0.5, 0.25, 0.25)),
        # 5 problems: p0, p1 fixed; p2 kept; p3 never; p4 broken. Acc@t1 2/5, Acc@t2 3/5.
        ([0, 0, 1, 0, 1], [1, 1, 1, 0, 0], (5, 0.4, 0.6, 0.4, 0.2)),
        # 3 problems, 1 of 3 right at t1, 3 of 3 at t2: two fixed, none broken.
        ([0, 1, 0], [1, 1, 1], (3, 1 / 3, 1.0, 2 / 3, 0.0)),
        # 8 problems: c->c x2, i->c x3, i->i x1, c->i x2 -> t1 4/8, t2 5/8.
        ([1, 1, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0], (8, 0.5, 0.625, 0.375, 0.25)),
    ],
)
def test_five_metrics_on_hand_made_rewards(r1, r2, expect):
  _check(metrics.two_turn_metrics(r1, r2), *expect)


@pytest.mark.parametrize(
    "r1, r2, expect",
    [
        ([1, 1, 1], [1, 1, 1], (3, 1.0, 1.0, 0.0, 0.0)),  # all correct: nothing to fix or break
        ([0, 0, 0, 0], [0, 0, 0, 0], (4, 0.0, 0.0, 0.0, 0.0)),  # none correct
        ([1, 1], [0, 0], (2, 1.0, 0.0, 0.0, 1.0)),  # every answer broken
        ([0, 0], [1, 1], (2, 0.0, 1.0, 1.0, 0.0)),  # every answer fixed
        ([1], [0], (1, 1.0, 0.0, 0.0, 1.0)),  # n = 1
        ([0], [1], (1, 0.0, 1.0, 1.0, 0.0)),
        ([1], [1], (1, 1.0, 1.0, 0.0, 0.0)),
        ([0], [0], (1, 0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_edge_cases(r1, r2, expect):
  _check(metrics.two_turn_metrics(r1, r2), *expect)


def test_inputs_arrays_bools_and_threshold():
  """float32 arrays (the Scores rewards), bools and lists give the same numbers; a reward
  counts as correct only above 0.5."""
  r1, r2 = [1, 0, 0, 1], [1, 1, 0, 0]
  ref = metrics.two_turn_metrics(r1, r2)
  assert metrics.two_turn_metrics(np.asarray(r1, np.float32), np.asarray(r2, np.float32)) == ref
  assert metrics.two_turn_metrics(np.asarray(r1, bool), np.asarray(r2, bool)) == ref
  assert metrics.two_turn_metrics(tuple(r1), np.asarray(r2, np.int64)) == ref
  # 0.5 is not correct, 0.51 is: t1 = [c, i, i, c], t2 = [c, c, i, i] again.
  _check(
      metrics.two_turn_metrics([0.9, 0.5, 0.0, 0.51], [1.0, 0.75, 0.49, 0.5]),
      4,
      0.5,
      0.5,
      0.25,
      0.25,
  )


def test_several_samples_per_problem_count_every_sample():
  """[problems, samples] rewards: the rates are over all problem x sample rows."""
  r1 = np.array([[1, 0, 0], [1, 1, 0]])  # 3 of 6 right at t1
  r2 = np.array([[1, 1, 0], [0, 1, 1]])  # 4 of 6 at t2
  # Flips, row-wise: (1,1) (0,1)* (0,0) | (1,0)# (1,1) (0,1)*  -> i->c 2/6, c->i 1/6.
  got = metrics.two_turn_metrics(r1, r2)
  _check(got, 6, 0.5, 4 / 6, 2 / 6, 1 / 6)
  assert got == metrics.two_turn_metrics(r1.reshape(-1), r2.reshape(-1))


def test_mismatched_or_empty_inputs_raise():
  with pytest.raises(ValueError, match=r"first attempts \(3,\) but second attempts \(2,\)"):
    metrics.two_turn_metrics([1, 0, 1], [1, 0])
  with pytest.raises(ValueError, match=r"first attempts \(1,\) but second attempts \(2, 2\)"):
    metrics.two_turn_metrics([1], np.ones((2, 2)))
  with pytest.raises(ValueError, match="first attempts \\(2, 3\\) but second attempts \\(3, 2\\)"):
    metrics.two_turn_metrics(np.ones((2, 3)), np.ones((3, 2)))  # same size, rows would mis-pair
  with pytest.raises(ValueError, match="no problems"):
    metrics.two_turn_metrics([], [])


def test_metric_names():
  assert metrics.METRICS == FIVE
  assert [metrics.SHORT_NAMES[m] for m in metrics.METRICS] == [
      "Acc@t1",
      "Acc@t2",
      "Δ(t1,t2)",
      "Δ^{i→c}",
      "Δ^{c→i}",
  ]


def test_agrees_with_brute_force_on_every_pattern_of_three():
  """Every pair of reward vectors of length 3 (64 cases) against counting by hand."""
  for bits in itertools.product([0, 1], repeat=6):
    r1, r2 = bits[:3], bits[3:]
    i2c = sum(a == 0 and b == 1 for a, b in zip(r1, r2)) / 3
    c2i = sum(a == 1 and b == 0 for a, b in zip(r1, r2)) / 3
    _check(metrics.two_turn_metrics(r1, r2), 3, sum(r1) / 3, sum(r2) / 3, i2c, c2i)


# --------------------------------------------------------------------------- over runs


def test_mean_std_over_runs():
  runs = [
      metrics.two_turn_metrics([1, 0, 0, 1], [1, 1, 0, 0]),  # .5 .5 0 .25 .25
      metrics.two_turn_metrics([1, 1, 0, 1], [1, 1, 1, 1]),
  ]  # .75 1 .25 .25 0
  out = metrics.mean_std(runs)
  assert set(out) == {"n", *FIVE}
  expect = {  # mean, population std (ddof=0): |a - b| / 2 for two runs
      "n": (4.0, 0.0),
      "accuracy_t1": (0.625, 0.125),
      "accuracy_t2": (0.75, 0.25),
      "delta_t1_t2": (0.125, 0.125),
      "delta_i_to_c": (0.25, 0.0),
      "delta_c_to_i": (0.125, 0.125),
  }
  for k, (m, s) in expect.items():
    assert out[k] == pytest.approx((m, s), abs=1e-12), (k, out[k])
    assert all(isinstance(x, float) for x in out[k])
  # Three runs: mean 2, std sqrt(2/3) (deviations -1, 0, 1).
  assert metrics.mean_std([{"a": 1}, {"a": 2}, {"a": 3}])["a"] == pytest.approx(
      (2.0, (2 / 3) ** 0.5), abs=1e-12
  )


def test_mean_std_one_run_keys_and_empty():
  one = metrics.mean_std([{"accuracy_t1": 0.3, "x": 2}])
  assert one == {"accuracy_t1": (0.3, 0.0), "x": (2.0, 0.0)}
  # Only keys every run has survive, in the first run's order.
  out = metrics.mean_std([{"a": 1, "b": 2, "c": 3}, {"c": 5, "a": 3}])
  assert list(out) == ["a", "c"] and out["a"] == (2.0, 1.0) and out["c"] == (4.0, 1.0)
  with pytest.raises(ValueError, match="no runs"):
    metrics.mean_std([])


# --------------------------------------------------------------------------- tables


def _cells(line):
  return [c.strip() for c in line.strip().strip("|").split("|")]


def test_format_table_values_in_percent():
  m = metrics.two_turn_metrics([0, 0, 1, 0, 1], [1, 1, 1, 0, 0])
  table = metrics.format_table({"base": m, "SCoRe": {"accuracy_t1": 0.6, "delta_t1_t2": -0.012}})
  lines = table.splitlines()
  assert len(lines) == 4
  assert _cells(lines[0]) == ["method", "Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δ^{i→c}", "Δ^{c→i}"]
  assert lines[1] == "| --- | ---: | ---: | ---: | ---: | ---: |"
  assert _cells(lines[2]) == ["base", "40.0", "60.0", "20.0", "40.0", "20.0"]
  # Missing metrics print an en dash; negative deltas keep their sign, one decimal.
  assert _cells(lines[3]) == ["SCoRe", "60.0", "–", "-1.2", "–", "–"]


def test_format_table_mean_std_cells_and_metric_subset():
  runs = metrics.mean_std(
      [{"accuracy_t1": 0.5, "accuracy_t2": 0.6}, {"accuracy_t1": 0.7, "accuracy_t2": 0.6}]
  )
  table = metrics.format_table({"policy": runs}, metrics=("accuracy_t2", "accuracy_t1", "n"))
  lines = table.splitlines()
  # Unknown names (no short name) are printed as given.
  assert _cells(lines[0]) == ["method", "Acc@t2", "Acc@t1", "n"]
  assert lines[1] == "| --- | ---: | ---: | ---: |"
  assert _cells(lines[2]) == ["policy", "60.0 ± 0.0", "60.0 ± 10.0", "–"]
  assert metrics.format_table({}).splitlines()[2:] == []  # no methods: header only


# --------------------------------------------------------------------------- edit distance


def _naive_levenshtein(a, b):
  d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
  for i in range(len(a) + 1):
    d[i][0] = i
  for j in range(len(b) + 1):
    d[0][j] = j
  for i in range(1, len(a) + 1):
    for j in range(1, len(b) + 1):
      d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
  return d[-1][-1]


@pytest.mark.parametrize(
    "a, b, d",
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("flaw", "lawn", 2),  # -f, +n
        ("intention", "execution", 5),
        ("abc", "abc", 0),
        ("", "", 0),
        ("", "abc", 3),
        ("abcd", "", 4),
        ("abc", "cba", 2),
        ("a", "b", 1),
        ("ab", "ba", 2),  # no transpositions in Levenshtein
        ("xabc", "abc", 1),  # one deletion at the front
        ("abc", "abcxyz", 3),  # insertions at the end
        ([1, 2, 3, 4], [1, 3, 4], 1),  # token ids, not only strings
        ([7, 7, 7], [8, 8, 8, 8], 4),
    ],
)
def test_edit_distance_known_values(a, b, d):
  assert metrics.edit_distance(a, b) == d
  assert metrics.edit_distance(b, a) == d  # symmetric
  assert isinstance(metrics.edit_distance(a, b), int)


def test_edit_distance_matches_the_textbook_recursion():
  rng = np.random.default_rng(0)
  for _ in range(200):
    a = rng.integers(0, 4, rng.integers(0, 9)).tolist()
    b = rng.integers(0, 4, rng.integers(0, 9)).tolist()
    assert metrics.edit_distance(a, b) == _naive_levenshtein(a, b), (a, b)


def test_normalized_edit_distance():
  assert metrics.normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
  assert metrics.normalized_edit_distance([1, 2, 3, 4], [1, 3, 4]) == pytest.approx(1 / 4)
  assert metrics.normalized_edit_distance("abc", "abc") == 0.0  # a copy
  assert metrics.normalized_edit_distance("abc", "xyz") == 1.0  # a rewrite from scratch
  assert metrics.normalized_edit_distance("", "abcd") == 1.0
  assert metrics.normalized_edit_distance("", "") == 0.0  # two empty attempts: the same

"""Self-correction metrics of the paper, always over both turns, and their tables.

All rates are fractions in [0, 1] over problems (the paper prints them as percent):
  accuracy_t1, accuracy_t2: mean reward of the first / second attempt;
  delta_t1_t2 = accuracy_t2 - accuracy_t1 (= delta_i_to_c - delta_c_to_i);
  delta_i_to_c: fraction of problems wrong at turn 1 and right at turn 2;
  delta_c_to_i: fraction right at turn 1 and wrong at turn 2.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i")
SHORT_NAMES = {
    "accuracy_t1": "Acc@t1",
    "accuracy_t2": "Acc@t2",
    "delta_t1_t2": "Δ(t1,t2)",
    "delta_i_to_c": "Δ^{i→c}",
    "delta_c_to_i": "Δ^{c→i}",
}


def two_turn_metrics(r1, r2) -> dict[str, float]:
  """The five metrics from binary rewards of the two attempts ([N] each, 1 = correct)."""
  r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
  if r1.shape != r2.shape:  # before flattening: [2, 3] and [3, 2] would pair rows wrongly
    raise ValueError(f"two_turn_metrics: first attempts {r1.shape} but second attempts {r2.shape}")
  r1, r2 = r1.reshape(-1) > 0.5, r2.reshape(-1) > 0.5
  if not r1.size:
    raise ValueError("two_turn_metrics: no problems")
  return {
      "n": int(r1.size),
      "accuracy_t1": float(r1.mean()),
      "accuracy_t2": float(r2.mean()),
      "delta_t1_t2": float(r2.mean() - r1.mean()),
      "delta_i_to_c": float((~r1 & r2).mean()),
      "delta_c_to_i": float((r1 & ~r2).mean()),
  }


def mean_std(runs: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
  """Per metric (mean, std over runs; std with ddof=0 so one run gives 0)."""
  if not runs:
    raise ValueError("mean_std: no runs")
  keys = [k for k in runs[0] if all(k in r for r in runs)]
  return {
      k: (float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))) for k in keys
  }


def _cell(v) -> str:
  if isinstance(v, tuple):
    return f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"
  return f"{100 * float(v):.1f}"


def format_table(rows: Mapping[str, Mapping], metrics: Sequence[str] = METRICS) -> str:
  """Markdown table in percent, one row per method; cells are values or (mean, std)."""
  head = "| method | " + " | ".join(SHORT_NAMES.get(m, m) for m in metrics) + " |"
  sep = "| --- |" + " ---: |" * len(metrics)
  lines = [head, sep]
  for name, row in rows.items():
    lines.append(
        f"| {name} | " + " | ".join(_cell(row[m]) if m in row else "–" for m in metrics) + " |"
    )
  return "\n".join(lines)


def edit_distance(a: Sequence, b: Sequence) -> int:
  """Levenshtein distance between two token sequences (O(len(a) * len(b)), NumPy rows)."""
  a, b = list(a), list(b)
  if not a or not b:
    return max(len(a), len(b))
  bb = np.asarray(b)
  prev = np.arange(len(b) + 1)
  for i, x in enumerate(a, 1):
    sub = prev[:-1] + (bb != x)
    cur = np.empty_like(prev)
    cur[0] = i
    cur[1:] = np.minimum(sub, prev[1:] + 1)
    # Insertions run left to right: cur[j] = min(cur[j], cur[j-1] + 1), a running minimum.
    cur = np.minimum.accumulate(cur - np.arange(len(b) + 1)) + np.arange(len(b) + 1)
    prev = cur
  return int(prev[-1])


def normalized_edit_distance(a: Sequence, b: Sequence) -> float:
  """Edit distance divided by the longer length: 0 = the same attempt, 1 = nothing shared.

  The paper uses it to show that SCoRe's second attempts edit rather than copy (≈0) or
  rewrite from scratch (≈1)."""
  n = max(len(a), len(b))
  return edit_distance(a, b) / n if n else 0.0

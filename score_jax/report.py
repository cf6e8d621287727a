"""The run report: a markdown table of both turns' metrics and PNG training curves.

    write_report(workdir, {'base model': base_metrics, 'SCoRe': final_metrics})

reads `<workdir>/metrics.jsonl` (written by the trainer) and writes `<workdir>/report.md`,
`<workdir>/curves.png` (rewards per turn, Δ(t1,t2), KL per turn, with the stage boundaries).
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import numpy as np

from score_jax import metrics as metrics_lib


def read_metrics(path: str, split: str = "train") -> list[dict]:
  """Records of one split from a metrics.jsonl; for a resumed run the last record of a step
  wins."""
  if not os.path.exists(path):
    return []
  by_step: dict[int, dict] = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      rec = json.loads(line)
      if rec.get("split") == split:
        by_step[int(rec["step"])] = rec
  return [by_step[s] for s in sorted(by_step)]


def smooth(x: Sequence[float], window: int) -> np.ndarray:
  """Trailing moving average (the first points average what exists so far)."""
  x = np.asarray(x, np.float64)
  if window <= 1 or x.size == 0:
    return x
  c = np.cumsum(np.insert(x, 0, 0.0))
  idx = np.arange(1, x.size + 1)
  lo = np.maximum(idx - window, 0)
  return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(records: Sequence[dict], path: str, stage_starts: Sequence[int] = ()) -> str:
  """Rewards per turn, Δ(t1,t2) and KL per turn over training steps -> PNG at `path`."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = np.array([r["step"] for r in records])
  window = max(1, len(records) // 20)
  get = lambda k: np.array([r.get(k, np.nan) for r in records], np.float64)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  panels = [
      ("training reward (sampled, moving average)", [("acc_t1", "turn 1"), ("acc_t2", "turn 2")]),
      (
          "Δ(t1,t2) and its parts",
          [("delta_t1_t2", "Δ(t1,t2)"), ("delta_i_to_c", "Δ i→c"), ("delta_c_to_i", "Δ c→i")],
      ),
      ("KL to the reference, per token", [("kl_t1", "turn 1"), ("kl_t2", "turn 2")]),
  ]
  for ax, (title, series) in zip(axes, panels):
    for key, label in series:
      y = get(key)
      if np.isfinite(y).any():
        ax.plot(steps, smooth(np.nan_to_num(y), window), label=label)
    for s in stage_starts[1:]:
      ax.axvline(s, color="gray", ls="--", lw=1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
  if stage_starts:
    axes[0].text(
        0.01, 0.02, "dashed: next stage", transform=axes[0].transAxes, fontsize=8, color="gray"
    )
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_report(
    workdir: str,
    rows: Mapping[str, Mapping[str, float]],
    *,
    title: str = "SCoRe run",
    notes: Sequence[str] = (),
    stage_starts: Sequence[int] = (),
) -> str:
  """report.md (+ curves.png when there are training metrics) in `workdir`; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  lines = [f"# {title}", ""]
  n = {int(r["n"]) for r in rows.values() if "n" in r}
  lines.append(
      f"Held-out problems: {', '.join(map(str, sorted(n))) or '?'}; greedy decoding; "
      "numbers in percent."
  )
  lines += ["", metrics_lib.format_table(rows), ""]
  if records:
    plot_curves(records, os.path.join(workdir, "curves.png"), stage_starts)
    lines += ["![training curves](curves.png)", ""]
  lines += [f"- {n}" for n in notes]
  path = os.path.join(workdir, "report.md")
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines).rstrip() + "\n")
  os.replace(path + ".tmp", path)
  return path

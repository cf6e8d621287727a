"""Splits of a procedural problem family: a problem is a pure function of (split, index).

Splits are disjoint by construction: a problem belongs to the split its content hash selects
(`EVAL_FRACTION` of all problems are held out), so no training problem, whatever its seed,
is ever an evaluation problem.
"""

from __future__ import annotations

import hashlib

import numpy as np

EVAL_FRACTION = 0.1
SPLITS = ("sft", "train", "eval")
_SPLIT_SEED = {"sft": 1, "train": 2, "eval": 3}


def split_rng(split: str, index: int, seed: int, *salt: int) -> np.random.Generator:
  """The generator of the `index`-th problem of `split` (`salt` tells families apart)."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: expected one of {SPLITS}")
  return np.random.default_rng([seed, _SPLIT_SEED[split], index, *salt])


def is_eval(content: str) -> bool:
  """Whether a problem with this content text belongs to the held-out split."""
  digest = hashlib.sha256(content.encode()).digest()
  return int.from_bytes(digest[:8], "little") / 2.0**64 < EVAL_FRACTION

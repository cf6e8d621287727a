"""Environments: what a run trains on (tasks, prompts, instruction, scoring, problem streams).

`base` holds the contract every environment keeps; `datasets` the file-backed MATH / GSM8K /
MBPP / HumanEval tasks; `toy` a token-level smoke task; `embedded` the pair-sum task whose base
model `score_jax.embedded_base` builds. Which one a config names is decided in
`score_jax.build`, the only reader of the config.
"""

from score_jax.environments.base import Environment, Scores, Task, check_pairs
from score_jax.environments.datasets import (
    FAMILY_TEMPLATES,
    DatasetEnvironment,
    extract_code,
    truncate_at,
)
from score_jax.environments.embedded import PairSumEnvironment
from score_jax.environments.toy import ToyEnvironment, ToyTask

__all__ = [
    "DatasetEnvironment",
    "Environment",
    "FAMILY_TEMPLATES",
    "PairSumEnvironment",
    "Scores",
    "ToyEnvironment",
    "ToyTask",
    "Task",
    "check_pairs",
    "extract_code",
    "truncate_at",
]

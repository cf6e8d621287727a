"""Checkpoint importers into score_jax's Transformer."""
from score_jax.checkpoints.errors import CheckpointError
from score_jax.checkpoints.hf import (SUPPORTED_MODEL_TYPES, config_from_hf, load_hf_checkpoint,
                                      read_hf_config)

"""Checkpoint importers into score_jax's Transformer."""

from score_jax.checkpoints.errors import CheckpointError
from score_jax.checkpoints.hf import (
    SUPPORTED_MODEL_TYPES,
    config_from_hf,
    load_hf_checkpoint,
    read_hf_config,
)
from score_jax.checkpoints.gguf import (
    SUPPORTED_ARCHITECTURES as GGUF_ARCHITECTURES,
    GGUFFile,
    config_from_gguf,
    gemma3_270m_path,
    load_gguf,
    smollm2_path,
    spm_proto_from_gguf,
    tokenizer_from_gguf,
)
from score_jax.checkpoints.state import Checkpointer, abstract_target

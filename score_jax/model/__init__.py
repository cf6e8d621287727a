"""Decoder-only transformer (Gemma 2/3, Llama, Qwen2) in flax.nnx."""

from score_jax.model.config import ModelConfig, gemma2_pattern, gemma3_pattern, tiny
from score_jax.model.transformer import (
    KVCache,
    Transformer,
    abstract_model,
    init_model,
    positions_from_mask,
)

"""Model configuration: one frozen dataclass covers Gemma 2/3, Llama and Qwen2.

Family differences are expressed as flags (norm offset, post norms, QK-norm, soft-caps,
sliding-window layers...) so that one transformer implementation serves all of them and the
checkpoint importers only have to fill a config in.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

Family = Literal["gemma3", "gemma2", "llama", "qwen2"]
LayerType = Literal["global", "local"]
FAMILIES = ("gemma3", "gemma2", "llama", "qwen2")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer.

  Attributes:
    family: which chat template / checkpoint layout this config comes from.
    vocab_size: number of embedding rows.
    num_layers: number of transformer blocks.
    embed_dim: model width D.
    hidden_dim: MLP width F.
    num_heads: query heads N.
    num_kv_heads: key/value heads K (GQA when K < N).
    head_dim: per-head width H; None = embed_dim // num_heads (which must then divide).
    rope_base: RoPE base frequency of global layers.
    rope_base_local: RoPE base of sliding-window layers (Gemma 3: 10k); None = rope_base.
    rope_scale: linear RoPE position scaling of global layers (Gemma 3 4B+: 8.0).
    norm_eps: RMSNorm epsilon.
    norm_offset: RMSNorm multiplies by (1 + w) (Gemma) instead of w (Llama/Qwen).
    post_norms: extra RMSNorm after attention and after the MLP (Gemma 2/3).
    qk_norm: RMSNorm over head_dim on queries and keys (Gemma 3).
    qkv_bias: bias on the Q/K/V projections (Qwen2).
    activation: gated-MLP activation: 'silu' (SwiGLU) or 'gelu_tanh' (GeGLU).
    tie_embeddings: the output projection is the transposed embedding.
    scale_embeddings: multiply embeddings by sqrt(embed_dim) (Gemma).
    query_pre_attn_scalar: attention logits are scaled by this ** -0.5; None = head_dim.
    attn_logit_softcap: tanh soft-cap of attention logits (Gemma 2).
    final_logit_softcap: tanh soft-cap of output logits (Gemma 2).
    sliding_window: window of 'local' layers, in tokens.
    layer_types: 'global' or 'local' per layer; empty = all global.
    dtype: activation/computation dtype.
    param_dtype: parameter storage dtype.
  """

  family: Family = "llama"
  vocab_size: int = 256
  num_layers: int = 2
  embed_dim: int = 64
  hidden_dim: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int | None = 16
  rope_base: float = 10_000.0
  rope_base_local: float | None = None
  rope_scale: float = 1.0
  norm_eps: float = 1e-6
  norm_offset: bool = False
  post_norms: bool = False
  qk_norm: bool = False
  qkv_bias: bool = False
  activation: Literal["silu", "gelu_tanh"] = "silu"
  tie_embeddings: bool = False
  scale_embeddings: bool = False
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None
  layer_types: tuple[LayerType, ...] = ()
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.head_dim is None and isinstance(self.num_heads, int) and self.num_heads > 0:
      if self.embed_dim % self.num_heads:
        raise ValueError(
            f"ModelConfig.num_heads={self.num_heads}: does not divide "
            f"embed_dim={self.embed_dim} (head_dim=None derives it from them)"
        )
      object.__setattr__(self, "head_dim", self.embed_dim // self.num_heads)
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""

    def bad(field, msg):
      raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {msg}")

    if self.family not in FAMILIES:
      bad("family", f"unknown family; expected one of {FAMILIES}")
    for f in (
        "vocab_size",
        "num_layers",
        "embed_dim",
        "hidden_dim",
        "num_heads",
        "num_kv_heads",
        "head_dim",
    ):
      v = getattr(self, f)
      if not isinstance(v, int) or v <= 0:
        bad(f, "must be a positive integer")
    if self.num_heads % self.num_kv_heads:
      bad("num_kv_heads", f"must divide num_heads={self.num_heads}")
    if self.head_dim % 2:
      bad("head_dim", "must be even for rotary embeddings")
    if self.activation not in ("silu", "gelu_tanh"):
      bad("activation", "expected 'silu' or 'gelu_tanh'")
    if self.layer_types:
      if len(self.layer_types) != self.num_layers:
        bad("layer_types", f"needs one entry per layer (num_layers={self.num_layers})")
      for t in self.layer_types:
        if t not in ("global", "local"):
          bad("layer_types", f"entry {t!r} is neither 'global' nor 'local'")
      if "local" in self.layer_types and not self.sliding_window:
        bad("sliding_window", "local layers need a positive sliding_window")
    if self.sliding_window is not None and self.sliding_window <= 0:
      bad("sliding_window", "must be positive")
    if self.rope_base <= 0:
      bad("rope_base", "must be positive")
    if self.rope_scale <= 0:
      bad("rope_scale", "must be positive")
    for f in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar"):
      v = getattr(self, f)
      if v is not None and v <= 0:
        bad(f, "must be positive or None")
    for f in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, f))
      except TypeError:
        bad(f, "is not a dtype name")

  def layer_type(self, i: int) -> LayerType:
    return self.layer_types[i] if self.layer_types else "global"

  @property
  def attn_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)


def gemma3_pattern(num_layers: int, every: int = 6) -> tuple[LayerType, ...]:
  """Gemma 3: five sliding-window layers, then one global layer, repeated."""
  return tuple("global" if (i + 1) % every == 0 else "local" for i in range(num_layers))


def gemma2_pattern(num_layers: int) -> tuple[LayerType, ...]:
  """Gemma 2 alternates local (even index) and global (odd index) layers."""
  return tuple("local" if i % 2 == 0 else "global" for i in range(num_layers))


def tiny(family: Family = "llama", **kw) -> ModelConfig:
  """Small random-init configs for tests and CPU smoke runs, one per family."""
  base = dict(
      vocab_size=256,
      num_layers=2,
      embed_dim=64,
      hidden_dim=128,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
  )
  if family == "gemma3":
    base.update(
        family="gemma3",
        norm_offset=True,
        post_norms=True,
        qk_norm=True,
        activation="gelu_tanh",
        tie_embeddings=True,
        scale_embeddings=True,
        query_pre_attn_scalar=16,
        rope_base=1_000_000.0,
        rope_base_local=10_000.0,
        sliding_window=4,
        num_layers=3,
        layer_types=("local", "local", "global"),
    )
  elif family == "gemma2":
    base.update(
        family="gemma2",
        norm_offset=True,
        post_norms=True,
        activation="gelu_tanh",
        tie_embeddings=True,
        scale_embeddings=True,
        query_pre_attn_scalar=16,
        attn_logit_softcap=50.0,
        final_logit_softcap=30.0,
        sliding_window=4,
        layer_types=("local", "global"),
    )
  elif family == "qwen2":
    base.update(family="qwen2", qkv_bias=True, rope_base=1_000_000.0)
  elif family == "llama":
    base.update(family="llama")
  else:
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
  base.update(kw)
  return ModelConfig(**base)

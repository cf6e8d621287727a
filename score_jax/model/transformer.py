"""A decoder-only transformer in flax.nnx covering Gemma 2/3, Llama and Qwen2.

Two entry points share every layer:
  * `Transformer.__call__(tokens, input_mask=...)`: full-sequence forward for training and
    scoring; causal + padding mask, any padding side.
  * `Transformer.__call__(tokens, cache=..., num_new=...)`: decoding with a KV cache that keeps
    one length per batch row. New tokens of row b are written at slots
    `cache.lengths[b] ...`, so rows of different lengths stay compact (no holes) and the
    sampler can append turn-2 instructions right after each row's own turn-1 answer.
    Slot index == token position, so every slot below a row's length is a real token.

Parameters carry logical axis names (`out_sharding` metadata; `eager_sharding=False`) which
`score_jax.sharding` maps to mesh axes.

Shape letters: B batch, T new tokens, S cache slots, D embed, F mlp, N query heads,
K kv heads, G = N // K, H head dim, V vocab.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from score_jax.model.config import ModelConfig

Array = jax.Array
_NEG_INF = -2.3819763e38  # finite: fully masked rows stay NaN-free.


def _param(rngs: nnx.Rngs, init, shape, axes, dtype) -> nnx.Param:
  return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


def _fan_in_init(fan_in: int):
  return jax.nn.initializers.normal(stddev=fan_in**-0.5)


@flax.struct.dataclass
class KVCache:
  """Per-layer keys/values and one fill length per batch row.

  k, v: tuples over layers of [B, S, K, H]; lengths: [B] int32, the number of valid slots
  (equivalently the position of the next token) of each row.
  """

  k: tuple[Array, ...]
  v: tuple[Array, ...]
  lengths: Array

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return cls(
        k=zeros,
        v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
        lengths=jnp.zeros((batch,), jnp.int32),
    )

  @property
  def max_len(self) -> int:
    return self.k[0].shape[1]

  def repeat(self, n: int) -> "KVCache":
    """Each row repeated n times (row-major), e.g. n samples sharing one prompt prefill."""
    rep = lambda x: jnp.repeat(x, n, axis=0)
    return KVCache(k=tuple(map(rep, self.k)), v=tuple(map(rep, self.v)), lengths=rep(self.lengths))


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32; Gemma scales by (1 + w), Llama/Qwen by w."""

  def __init__(self, dim: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
    init = jax.nn.initializers.zeros if cfg.norm_offset else jax.nn.initializers.ones
    self.scale = _param(rngs, init, (dim,), ("norm",), cfg.param_dtype)
    self.offset = cfg.norm_offset
    self.eps = cfg.norm_eps

  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    w = self.scale[...].astype(jnp.float32)
    return (xf * (1.0 + w if self.offset else w)).astype(x.dtype)


def apply_rope(x: Array, positions: Array, base: float, scale: float = 1.0) -> Array:
  """Rotary embedding in the half-split layout of HF/Gemma. x: [B,T,*,H], positions: [B,T]."""
  h = x.shape[-1]
  inv_freq = 1.0 / (base ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  angles = positions.astype(jnp.float32)[..., None] / scale * inv_freq  # [B,T,H/2]
  angles = angles[:, :, None, :]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _softcap(x: Array, cap: float | None) -> Array:
  return x if cap is None else jnp.tanh(x / cap) * cap


class Attention(nnx.Module):
  """Grouped-query attention with optional QKV bias, QK-norm, soft-cap and sliding window."""

  def __init__(self, cfg: ModelConfig, layer_type: str, *, rngs: nnx.Rngs):
    d, n, k, h, pd = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.param_dtype
    self.cfg = cfg
    self.is_local = layer_type == "local"
    self.q_proj = _param(rngs, _fan_in_init(d), (d, n, h), ("embed", "heads", "head_dim"), pd)
    self.k_proj = _param(rngs, _fan_in_init(d), (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.v_proj = _param(rngs, _fan_in_init(d), (d, k, h), ("embed", "kv_heads", "head_dim"), pd)
    self.o_proj = _param(rngs, _fan_in_init(n * h), (n, h, d), ("heads", "head_dim", "embed"), pd)
    if cfg.qkv_bias:
      zeros = jax.nn.initializers.zeros
      self.q_bias = _param(rngs, zeros, (n, h), ("heads", "head_dim"), pd)
      self.k_bias = _param(rngs, zeros, (k, h), ("kv_heads", "head_dim"), pd)
      self.v_bias = _param(rngs, zeros, (k, h), ("kv_heads", "head_dim"), pd)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(h, cfg, rngs=rngs)
      self.k_norm = RMSNorm(h, cfg, rngs=rngs)
    if self.is_local:
      self.rope_base = cfg.rope_base_local or cfg.rope_base
      self.rope_scale = 1.0
    else:
      self.rope_base, self.rope_scale = cfg.rope_base, cfg.rope_scale

  def _project(self, x: Array, positions: Array):
    cfg, dt = self.cfg, x.dtype
    q = jnp.einsum("btd,dnh->btnh", x, self.q_proj[...].astype(dt))
    k = jnp.einsum("btd,dkh->btkh", x, self.k_proj[...].astype(dt))
    v = jnp.einsum("btd,dkh->btkh", x, self.v_proj[...].astype(dt))
    if cfg.qkv_bias:
      q = q + self.q_bias[...].astype(dt)
      k = k + self.k_bias[...].astype(dt)
      v = v + self.v_bias[...].astype(dt)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q = apply_rope(q, positions, self.rope_base, self.rope_scale)
    k = apply_rope(k, positions, self.rope_base, self.rope_scale)
    return q, k, v

  def _attend(self, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """q: [B,T,N,H], k/v: [B,S,K,H], mask: [B,T,S] bool -> [B,T,D]."""
    cfg = self.cfg
    b, t, n, h = q.shape
    kh = cfg.num_kv_heads
    q = q.reshape(b, t, kh, n // kh, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
    logits = _softcap(logits * cfg.attn_scale, cfg.attn_logit_softcap)
    logits = jnp.where(mask[:, None, None], logits, _NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v).reshape(b, t, n, h)
    return jnp.einsum("btnh,nhd->btd", out, self.o_proj[...].astype(out.dtype))

  def _window(self, mask: Array, q_idx: Array, k_idx: Array) -> Array:
    if self.is_local:
      mask = mask & (k_idx > q_idx - self.cfg.sliding_window)
    return mask

  def __call__(self, x: Array, positions: Array, input_mask: Array) -> Array:
    """Full-sequence attention. x: [B,T,D]; positions, input_mask: [B,T]."""
    q, k, v = self._project(x, positions)
    idx = jnp.arange(x.shape[1])
    q_idx, k_idx = idx[None, :, None], idx[None, None, :]
    mask = (k_idx <= q_idx) & input_mask[:, None, :]
    return self._attend(q, k, v, self._window(mask, q_idx, k_idx))

  def decode(self, x: Array, positions: Array, k_cache: Array, v_cache: Array, lengths: Array):
    """Writes the T new keys/values at each row's offset, then attends over the cache."""
    q, k, v = self._project(x, positions)
    b, t = x.shape[:2]
    rows = jnp.arange(b)[:, None]
    slots = lengths[:, None] + jnp.arange(t)[None, :]  # [B,T]
    k_cache = k_cache.at[rows, slots].set(k.astype(k_cache.dtype), mode="drop")
    v_cache = v_cache.at[rows, slots].set(v.astype(v_cache.dtype), mode="drop")
    q_idx = slots[:, :, None]
    k_idx = jnp.arange(k_cache.shape[1])[None, None, :]
    mask = self._window(k_idx <= q_idx, q_idx, k_idx)
    out = self._attend(q, k_cache.astype(q.dtype), v_cache.astype(q.dtype), mask)
    return out, k_cache, v_cache


class MLP(nnx.Module):
  """Gated MLP: down(act(gate(x)) * up(x)); SwiGLU (silu) or GeGLU (gelu_tanh)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, f, pd = cfg.embed_dim, cfg.hidden_dim, cfg.param_dtype
    self.gate_proj = _param(rngs, _fan_in_init(d), (d, f), ("embed", "mlp"), pd)
    self.up_proj = _param(rngs, _fan_in_init(d), (d, f), ("embed", "mlp"), pd)
    self.down_proj = _param(rngs, _fan_in_init(f), (f, d), ("mlp", "embed"), pd)
    self.activation = cfg.activation

  def __call__(self, x: Array) -> Array:
    dt = x.dtype
    gate = x @ self.gate_proj[...].astype(dt)
    gate = jax.nn.silu(gate) if self.activation == "silu" else jax.nn.gelu(gate, approximate=True)
    return (gate * (x @ self.up_proj[...].astype(dt))) @ self.down_proj[...].astype(dt)


class Block(nnx.Module):
  """Pre-norm residual block; Gemma 2/3 add post-norms on both branches."""

  def __init__(self, cfg: ModelConfig, layer_type: str, *, rngs: nnx.Rngs):
    d = cfg.embed_dim
    self.pre_attn_norm = RMSNorm(d, cfg, rngs=rngs)
    self.attn = Attention(cfg, layer_type, rngs=rngs)
    self.pre_mlp_norm = RMSNorm(d, cfg, rngs=rngs)
    self.mlp = MLP(cfg, rngs=rngs)
    self.post_norms = cfg.post_norms
    if cfg.post_norms:
      self.post_attn_norm = RMSNorm(d, cfg, rngs=rngs)
      self.post_mlp_norm = RMSNorm(d, cfg, rngs=rngs)

  def _mlp_branch(self, x: Array) -> Array:
    y = self.mlp(self.pre_mlp_norm(x))
    return x + (self.post_mlp_norm(y) if self.post_norms else y)

  def _add_attn(self, x: Array, y: Array) -> Array:
    return x + (self.post_attn_norm(y) if self.post_norms else y)

  def __call__(self, x: Array, positions: Array, input_mask: Array) -> Array:
    x = self._add_attn(x, self.attn(self.pre_attn_norm(x), positions, input_mask))
    return self._mlp_branch(x)

  def decode(self, x, positions, k_cache, v_cache, lengths):
    y, k_cache, v_cache = self.attn.decode(
        self.pre_attn_norm(x), positions, k_cache, v_cache, lengths
    )
    return self._mlp_branch(self._add_attn(x, y)), k_cache, v_cache


class Transformer(nnx.Module):
  """The model: embed -> blocks -> final norm -> logits (fp32)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    d, v, pd = cfg.embed_dim, cfg.vocab_size, cfg.param_dtype
    self.cfg = cfg
    self.embedding = _param(rngs, _fan_in_init(d), (v, d), ("vocab", "embed"), pd)
    self.blocks = nnx.List(
        [Block(cfg, cfg.layer_type(i), rngs=rngs) for i in range(cfg.num_layers)]
    )
    self.final_norm = RMSNorm(d, cfg, rngs=rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, _fan_in_init(d), (d, v), ("embed", "vocab"), pd)

  def embed(self, tokens: Array) -> Array:
    dt = jnp.dtype(self.cfg.dtype)
    x = jnp.take(self.embedding[...], tokens, axis=0).astype(dt)
    if self.cfg.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(self.cfg.embed_dim), dt)
    return x

  def logits(self, x: Array) -> Array:
    """Final hidden states [.., D] -> float32 logits [.., V]."""
    x = self.final_norm(x)
    w = self.embedding[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    logits = jnp.dot(x, w.astype(x.dtype), preferred_element_type=jnp.float32)
    return _softcap(logits, self.cfg.final_logit_softcap)

  def hidden(
      self, tokens: Array, input_mask: Array | None = None, positions: Array | None = None
  ) -> Array:
    """Final-layer activations before the output norm, for a full sequence."""
    if input_mask is None:
      input_mask = jnp.ones(tokens.shape, bool)
    if positions is None:
      positions = positions_from_mask(input_mask)
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x, positions, input_mask)
    return x

  def __call__(
      self,
      tokens: Array,
      input_mask: Array | None = None,
      positions: Array | None = None,
      *,
      cache: KVCache | None = None,
      num_new: Array | None = None,
      logits_at: Array | None = None,
  ):
    """Full forward (cache=None) -> logits [B,T,V]; decode step -> (logits, new cache).

    In decode mode the T tokens of row b are written at slots lengths[b]..lengths[b]+T-1
    and only the first num_new[b] of them (default T) count towards the row's new length;
    later ones are padding that the next call overwrites. `logits_at` [B] (decode mode)
    computes the logits at one position per row only, [B,1,V]: a prefill needs the next
    token's distribution, not a [B,T,V] tensor (the output layer is most of its cost).
    """
    if cache is None:
      return self.logits(self.hidden(tokens, input_mask, positions))
    b, t = tokens.shape
    if positions is None:
      positions = cache.lengths[:, None] + jnp.arange(t, dtype=jnp.int32)[None, :]
    x = self.embed(tokens)
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      x, k, v = block.decode(x, positions, cache.k[i], cache.v[i], cache.lengths)
      ks.append(k)
      vs.append(v)
    if num_new is None:
      num_new = jnp.full((b,), t, jnp.int32)
    new_cache = KVCache(k=tuple(ks), v=tuple(vs), lengths=cache.lengths + num_new.astype(jnp.int32))
    if logits_at is not None:
      x = jnp.take_along_axis(x, logits_at.astype(jnp.int32)[:, None, None], axis=1)  # [B,1,D]
    return self.logits(x), new_cache


def positions_from_mask(input_mask: Array) -> Array:
  """Position of each token counting only valid tokens (left or right padding)."""
  return jnp.maximum(jnp.cumsum(input_mask.astype(jnp.int32), axis=-1) - 1, 0)


def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
  return Transformer(cfg, rngs=nnx.Rngs(params=seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
  """Shape-only model (no allocation), e.g. the target of a checkpoint import."""
  return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)))

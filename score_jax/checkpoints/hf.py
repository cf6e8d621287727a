"""Import Hugging Face checkpoints (safetensors) of Llama, Qwen2, Gemma 2 and Gemma 3.

A checkpoint is a directory with `config.json` and either `model.safetensors` or shards
`model-0000i-of-0000n.safetensors` listed in `model.safetensors.index.json`.

    cfg, model = load_hf_checkpoint("/path/to/gemma-3-1b-it")

Supported `model_type`s: llama (LlamaForCausalLM), qwen2 (Qwen2ForCausalLM), gemma2
(Gemma2ForCausalLM), gemma3_text (Gemma3ForCausalLM) and gemma3 (Gemma3ForConditionalGeneration:
only the language model is imported, the vision tower is skipped).

Both config layouts are understood: the one on the Hub (`rope_theta`, `rope_scaling`,
`rope_local_base_freq`, `sliding_window_pattern`) and the one transformers >= 5 writes
(`rope_parameters`, per layer type for Gemma 3; `layer_types`). Missing fields take the
defaults of the transformers config classes, as transformers itself would.

Safetensors files are parsed here (header + memory map) rather than through the
`safetensors` package, so that bf16/fp8 tensors load without torch and truncated or corrupt
files give a `CheckpointError` naming the file and tensor.

Layout notes. HF linear weights are [out, in]; ours are [in, ...out] with heads split:
q_proj [N*H, D] -> [D, N, H], o_proj [D, N*H] -> [N, H, D], gate/up [F, D] -> [D, F],
down [D, F] -> [F, D], lm_head [V, D] -> [D, V]. Norm weights are copied as-is: Gemma stores
w of (1 + w), which is also our convention (`norm_offset=True`). Llama/Qwen
`post_attention_layernorm` is our `pre_mlp_norm`; Gemma's is our `post_attn_norm`.
HF's sliding window (`kv_idx > q_idx - sliding_window`, on top of causal) is the same as ours.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import ml_dtypes
import numpy as np

from score_jax.checkpoints._import import import_params
from score_jax.checkpoints.errors import CheckpointError
from score_jax.model.config import ModelConfig
from score_jax.model.transformer import Transformer

SUPPORTED_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration",
}
_ARCH_TO_TYPE = {v: k for k, v in SUPPORTED_MODEL_TYPES.items()}
_FAMILY = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2", "gemma3_text": "gemma3"}

# Defaults of the transformers config classes for fields a config.json may omit (the Hub
# configs of Gemma 3 multimodal models, e.g., rely on them for heads/head_dim/vocab).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=False,
        rope_theta=10_000.0,
    ),
    "qwen2": dict(
        vocab_size=151936,
        hidden_size=4096,
        intermediate_size=22016,
        num_hidden_layers=32,
        num_attention_heads=32,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=False,
        rope_theta=10_000.0,
        use_sliding_window=False,
        sliding_window=4096,
        max_window_layers=28,
    ),
    "gemma2": dict(
        vocab_size=256000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        rope_theta=10_000.0,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
    ),
    "gemma3_text": dict(
        vocab_size=262_208,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        sliding_window_pattern=6,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
    ),
}
_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}
_LAYER_TYPES = {"sliding_attention": "local", "full_attention": "global"}


def _err(msg: str, where: str | None) -> CheckpointError:
  return CheckpointError(f"{where}: {msg}" if where else msg)


# ----------------------------------------------------------------------------- config


def _model_type(hf: dict, where: str | None) -> str:
  mt = hf.get("model_type")
  if mt is None:
    archs = hf.get("architectures") or []
    mt = next((_ARCH_TO_TYPE[a] for a in archs if a in _ARCH_TO_TYPE), None)
    if mt is None:
      raise _err(
          f"config has no model_type and unsupported architectures {archs}; supported: "
          f"{_supported()}",
          where,
      )
  if mt not in SUPPORTED_MODEL_TYPES:
    raise _err(
        f"unsupported model_type {mt!r} (architectures {hf.get('architectures')}); "
        f"supported: {_supported()}",
        where,
    )
  return mt


def _supported() -> str:
  return ", ".join(f"{k} ({v})" for k, v in SUPPORTED_MODEL_TYPES.items())


def text_config(hf_config: dict, where: str | None = None) -> tuple[str, dict]:
  """(model_type, config of the language model) with the transformers defaults filled in."""
  mt = _model_type(hf_config, where)
  hf = dict(hf_config)
  if mt == "gemma3":  # multimodal wrapper: the language model is described by text_config
    tc = hf.get("text_config")
    if not isinstance(tc, dict):
      raise _err("gemma3 (Gemma3ForConditionalGeneration) config has no text_config dict", where)
    tc = dict(tc)
    tc.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
    tc.setdefault("model_type", "gemma3_text")
    if tc["model_type"] != "gemma3_text":
      raise _err(f"gemma3 text_config has unsupported model_type {tc['model_type']!r}", where)
    mt, hf = "gemma3_text", tc
  # An explicit null keeps the default, except where null means "off" (the soft-caps).
  nullable = ("final_logit_softcapping", "attn_logit_softcapping")
  out = dict(_DEFAULTS[mt])
  out.update({k: v for k, v in hf.items() if v is not None or k in nullable or k not in out})
  if out.get("num_key_value_heads") is None:
    out["num_key_value_heads"] = out["num_attention_heads"]
  if out.get("head_dim") is None:
    out["head_dim"] = out["hidden_size"] // out["num_attention_heads"]
  return mt, out


def _rope_entry(params: dict, what: str, where: str | None) -> tuple[float | None, float]:
  """(theta or None, linear scale) of one rope_parameters / rope_scaling dict."""
  rope_type = params.get("rope_type", params.get("type", "default")) or "default"
  frac = params.get("partial_rotary_factor", 1.0)
  if frac not in (None, 1, 1.0):
    raise _err(f"{what}: partial_rotary_factor={frac} is not supported", where)
  if rope_type == "default":
    scale = 1.0
  elif rope_type == "linear":
    scale = float(params.get("factor", 1.0))
  else:
    raise _err(
        f"{what}: unsupported RoPE scaling type {rope_type!r} (supported: default, "
        f"linear; e.g. Llama 3.1+ 'llama3' scaling needs a ModelConfig extension)",
        where,
    )
  theta = params.get("rope_theta")
  return (None if theta is None else float(theta)), scale


def _rope(mt: str, hf: dict, where: str | None) -> tuple[float, float, float | None]:
  """(rope_base, rope_scale, rope_base_local)."""
  theta = float(hf["rope_theta"])
  local_theta = float(hf["rope_local_base_freq"]) if "rope_local_base_freq" in hf else None
  rp = hf.get("rope_parameters")
  if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
    full, local = rp.get("full_attention") or {}, rp.get("sliding_attention")
  elif isinstance(rp, dict):
    full, local = rp, None
  else:
    full, local = hf.get("rope_scaling") or {}, None
  base, scale = _rope_entry(full, "rope parameters", where)
  base = theta if base is None else base
  if local is not None:
    local_base, local_scale = _rope_entry(local, "rope parameters of sliding_attention", where)
    if local_scale != 1.0:
      raise _err(
          f"linear RoPE scaling {local_scale} on sliding-window layers is not supported", where
      )
    local_theta = local_base if local_base is not None else local_theta
  if mt != "gemma3_text":
    local_theta = None
  return base, scale, local_theta


def _layer_types(mt: str, hf: dict, n: int, where: str | None) -> tuple[str, ...]:
  lt = hf.get("layer_types")
  if lt is not None:
    if len(lt) != n:
      raise _err(f"layer_types has {len(lt)} entries for num_hidden_layers={n}", where)
    bad = sorted({t for t in lt if t not in _LAYER_TYPES})
    if bad:
      raise _err(f"unsupported layer_types {bad}; supported: {sorted(_LAYER_TYPES)}", where)
    return tuple(_LAYER_TYPES[t] for t in lt)
  if mt == "gemma3_text":
    every = int(hf.get("sliding_window_pattern") or 6)
    return tuple("local" if (i + 1) % every else "global" for i in range(n))
  if mt == "gemma2":
    return tuple("local" if i % 2 == 0 else "global" for i in range(n))
  if mt == "qwen2" and hf.get("use_sliding_window") and hf.get("sliding_window"):
    return tuple("local" if i >= hf["max_window_layers"] else "global" for i in range(n))
  return ("global",) * n


def config_from_hf(hf_config: dict, *, where: str | None = None, **overrides) -> ModelConfig:
  """Our ModelConfig from a Hugging Face `config.json` dict.

  `where` (e.g. the checkpoint path) prefixes error messages; `overrides` replace fields of
  the result (e.g. dtype='bfloat16').
  """
  mt, hf = text_config(hf_config, where)
  family = _FAMILY[mt]
  gemma = family in ("gemma2", "gemma3")

  act_name = hf.get("hidden_activation") if gemma else None
  act_name = act_name or hf.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
  if act_name not in _ACTIVATIONS:
    raise _err(f"unsupported activation {act_name!r}; supported: {sorted(_ACTIVATIONS)}", where)
  if hf.get("attention_bias") and family != "qwen2":
    raise _err(
        "attention_bias=True (bias on q/k/v/o projections) is not supported for " f"{mt}", where
    )
  if hf.get("mlp_bias"):
    raise _err("mlp_bias=True is not supported", where)
  if hf.get("use_bidirectional_attention"):
    raise _err("use_bidirectional_attention=True (embedding models) is not supported", where)

  n = int(hf["num_hidden_layers"])
  layer_types = _layer_types(mt, hf, n, where)
  has_local = "local" in layer_types
  window = hf.get("sliding_window") if has_local else None
  if has_local and not window:
    raise _err("sliding-window layers but no sliding_window size in the config", where)
  rope_base, rope_scale, rope_base_local = _rope(mt, hf, where)

  def opt_float(key):
    v = hf.get(key)
    return None if v is None else float(v)

  kw = dict(
      family=family,
      vocab_size=int(hf["vocab_size"]),
      num_layers=n,
      embed_dim=int(hf["hidden_size"]),
      hidden_dim=int(hf["intermediate_size"]),
      num_heads=int(hf["num_attention_heads"]),
      num_kv_heads=int(hf["num_key_value_heads"]),
      head_dim=int(hf["head_dim"]),
      rope_base=rope_base,
      rope_base_local=rope_base_local,
      rope_scale=rope_scale,
      norm_eps=float(hf["rms_norm_eps"]),
      norm_offset=gemma,
      post_norms=gemma,
      qk_norm=family == "gemma3",
      qkv_bias=family == "qwen2",
      activation=_ACTIVATIONS[act_name],
      tie_embeddings=bool(hf.get("tie_word_embeddings")),
      scale_embeddings=gemma,
      query_pre_attn_scalar=opt_float("query_pre_attn_scalar") if gemma else None,
      attn_logit_softcap=opt_float("attn_logit_softcapping") if gemma else None,
      final_logit_softcap=opt_float("final_logit_softcapping") if gemma else None,
      sliding_window=int(window) if window else None,
      layer_types=layer_types if has_local else (),
  )
  kw.update(overrides)
  try:
    return ModelConfig(**kw)
  except (ValueError, TypeError) as e:
    raise _err(f"config does not give a valid ModelConfig: {e}", where) from e


# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
    "BOOL": np.bool_,
}


class SafetensorsFile:
  """A validated safetensors file whose tensors are read lazily from a memory map."""

  def __init__(self, path: str):
    self.path = path
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      head = f.read(8)
      if len(head) < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
      n = int.from_bytes(head, "little")
      if 8 + n > size:
        raise CheckpointError(
            f"{path}: truncated or corrupt safetensors file: header declares "
            f"{n} bytes but the file has only {size - 8} after the length"
        )
      try:
        header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
          raise ValueError("header is not a JSON object")
      except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from e
    header.pop("__metadata__", None)
    self._data_start = 8 + n
    data_size = size - self._data_start
    self.entries: dict[str, tuple[Any, tuple[int, ...], int, int]] = {}
    for name, info in header.items():
      try:
        dtype = _ST_DTYPES[info["dtype"]]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
      except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: tensor {name!r} has a bad or unsupported header " f"entry {info!r}"
        ) from e
      nbytes = math.prod(shape) * np.dtype(dtype).itemsize
      if end - begin != nbytes or begin < 0:
        raise CheckpointError(
            f"{path}: tensor {name!r} declares offsets {begin}..{end} for "
            f"{nbytes} bytes of {info['dtype']}{list(shape)}"
        )
      if end > data_size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: tensor {name!r} ends at "
            f"byte {end} of the data but the file holds {data_size}"
        )
      self.entries[name] = (dtype, shape, begin, end)
    self._mmap = None

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name][1]

  def get(self, name: str) -> np.ndarray:
    dtype, shape, begin, end = self.entries[name]
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    raw = self._mmap[self._data_start + begin : self._data_start + end]
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _normalize_name(name: str) -> str | None:
  """Canonical `model.*` / `lm_head.weight` name; None for tensors outside the language model."""
  for old, new in (
      ("model.language_model.", "model."),
      ("language_model.model.", "model."),
      ("language_model.lm_head.", "lm_head."),
      ("language_model.", "model."),
  ):
    if name.startswith(old):
      return new + name[len(old) :]
  if name.startswith(
      (
          "vision_tower.",
          "multi_modal_projector.",
          "model.vision_tower.",
          "model.multi_modal_projector.",
      )
  ):
    return None
  if name.startswith(("layers.", "embed_tokens.", "norm.")):
    return "model." + name
  return name


class _Tensors:
  """All tensors of a checkpoint directory, by canonical name."""

  def __init__(self, path: str):
    index_path = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index_path):
      try:
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
      except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: corrupt safetensors index: {e}") from e
      files = sorted(set(weight_map.values()))
      for fn in files:
        if not os.path.isfile(os.path.join(path, fn)):
          raise CheckpointError(
              f"{path}: shard {fn!r} listed in model.safetensors.index.json " "is missing"
          )
    else:
      files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
      if not files:
        raise CheckpointError(
            f"{path}: no *.safetensors file (expected model.safetensors or "
            "shards with model.safetensors.index.json)"
        )
    self.path = path
    self.where: dict[str, tuple[SafetensorsFile, str]] = {}
    for fn in files:
      st = SafetensorsFile(os.path.join(path, fn))
      for name in st.entries:
        canon = _normalize_name(name)
        if canon is not None:
          self.where[canon] = (st, name)

  def __contains__(self, name: str) -> bool:
    return name in self.where

  def get(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
    if name not in self.where:
      raise CheckpointError(f"{self.path}: missing tensor {name!r}")
    st, raw_name = self.where[name]
    got = st.shape(raw_name)
    if tuple(got) != tuple(expected_shape):
      raise CheckpointError(
          f"{st.path}: tensor {raw_name!r} has shape {list(got)}, expected "
          f"{list(expected_shape)}"
      )
    return st.get(raw_name)


# ----------------------------------------------------------------------------- mapping


def _param_sources(cfg: ModelConfig) -> dict[tuple, tuple[str, tuple[int, ...], Callable]]:
  """Our param path -> (HF tensor name, HF shape, HF array -> our array)."""
  d, f, n, k, h, v = (
      cfg.embed_dim,
      cfg.hidden_dim,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      cfg.vocab_size,
  )
  ident = lambda x: x
  tr = lambda x: x.T
  gemma = cfg.family in ("gemma2", "gemma3")
  src: dict[tuple, tuple[str, tuple[int, ...], Callable]] = {
      ("embedding",): ("model.embed_tokens.weight", (v, d), ident),
      ("final_norm", "scale"): ("model.norm.weight", (d,), ident),
  }
  if not cfg.tie_embeddings:
    src[("lm_head",)] = ("lm_head.weight", (v, d), tr)
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    a = p + "self_attn."
    b = ("blocks", i)
    src[b + ("attn", "q_proj")] = (a + "q_proj.weight", (n * h, d), lambda x: x.T.reshape(d, n, h))
    src[b + ("attn", "k_proj")] = (a + "k_proj.weight", (k * h, d), lambda x: x.T.reshape(d, k, h))
    src[b + ("attn", "v_proj")] = (a + "v_proj.weight", (k * h, d), lambda x: x.T.reshape(d, k, h))
    src[b + ("attn", "o_proj")] = (a + "o_proj.weight", (d, n * h), lambda x: x.T.reshape(n, h, d))
    if cfg.qkv_bias:
      src[b + ("attn", "q_bias")] = (a + "q_proj.bias", (n * h,), lambda x: x.reshape(n, h))
      src[b + ("attn", "k_bias")] = (a + "k_proj.bias", (k * h,), lambda x: x.reshape(k, h))
      src[b + ("attn", "v_bias")] = (a + "v_proj.bias", (k * h,), lambda x: x.reshape(k, h))
    if cfg.qk_norm:
      src[b + ("attn", "q_norm", "scale")] = (a + "q_norm.weight", (h,), ident)
      src[b + ("attn", "k_norm", "scale")] = (a + "k_norm.weight", (h,), ident)
    src[b + ("mlp", "gate_proj")] = (p + "mlp.gate_proj.weight", (f, d), tr)
    src[b + ("mlp", "up_proj")] = (p + "mlp.up_proj.weight", (f, d), tr)
    src[b + ("mlp", "down_proj")] = (p + "mlp.down_proj.weight", (d, f), tr)
    src[b + ("pre_attn_norm", "scale")] = (p + "input_layernorm.weight", (d,), ident)
    if gemma:
      src[b + ("post_attn_norm", "scale")] = (p + "post_attention_layernorm.weight", (d,), ident)
      src[b + ("pre_mlp_norm", "scale")] = (p + "pre_feedforward_layernorm.weight", (d,), ident)
      src[b + ("post_mlp_norm", "scale")] = (p + "post_feedforward_layernorm.weight", (d,), ident)
    else:
      src[b + ("pre_mlp_norm", "scale")] = (p + "post_attention_layernorm.weight", (d,), ident)
  return src


def _ignorable(name: str, cfg: ModelConfig) -> bool:
  return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")


def read_hf_config(path: str | os.PathLike) -> dict:
  """The parsed `config.json` of a checkpoint directory (CheckpointError if absent/corrupt)."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: checkpoint directory does not exist")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{path}: no config.json in the checkpoint directory")
  try:
    with open(cfg_path) as f:
      hf = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{cfg_path}: corrupt config.json: {e}") from e
  if not isinstance(hf, dict):
    raise CheckpointError(f"{cfg_path}: config.json is not a JSON object")
  return hf


def load_hf_checkpoint(
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    param_dtype: str | None = None,
    strict: bool = True,
) -> tuple[ModelConfig, Transformer]:
  """Reads a Hugging Face checkpoint directory into (config, model).

  Args:
    path: directory with config.json and model.safetensors (or index + shards).
    dtype: computation dtype of the returned config.
    param_dtype: parameter dtype; None = `dtype`. Tensors are cast on load.
    strict: raise if the checkpoint holds language-model tensors that nothing consumes
      (e.g. an o_proj bias), which would otherwise be silently dropped.

  Raises:
    CheckpointError naming the missing/corrupt file, missing or mis-shaped tensor, or the
    unsupported architecture / config field.
  """
  path = os.fspath(path)
  hf = read_hf_config(path)
  cfg = config_from_hf(hf, where=path, dtype=dtype, param_dtype=param_dtype or dtype)
  tensors = _Tensors(path)
  model = import_params(
      cfg,
      _param_sources(cfg),
      lambda name, shape, key: tensors.get(name, shape),
      tensors.where,
      where=path,
      fmt="HF",
      container="checkpoint",
      strict=strict,
      ignorable=lambda name: _ignorable(name, cfg),
  )
  return cfg, model

"""Export to Hugging Face: the inverse of `score_jax.checkpoints.hf` (the importer).

    tensors = hf_tensors(cfg, model)                    # {HF tensor name: np.ndarray}
    hf = hf_config(cfg, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    write_hf_directory("/tmp/out", cfg, model, tokenizer=tok)   # atomically

`hf_config` and `hf_tensors` are pure: a ModelConfig becomes the `config.json` dict of its
family's transformers class (llama -> LlamaForCausalLM, qwen2 -> Qwen2ForCausalLM, gemma2 ->
Gemma2ForCausalLM, gemma3 -> Gemma3ForCausalLM, model_type gemma3_text) in the layout
transformers >= 5 writes (`rope_parameters`, `layer_types`), and our parameters become the
HF tensors under the names `hf._param_sources` reads, each transform undone (our
[in, ...out] layouts back to HF's [out, in]). `config_from_hf(hf_config(cfg))` gives `cfg`
back (up to fields with no effect, e.g. the window of a model without local layers) and
`load_hf_checkpoint` of an export gives the same parameters.

A ModelConfig that transformers cannot represent (e.g. QK-norm on Llama, sliding-window
layers on Llama, RoPE scaling on the local layers of Gemma 2, attention soft-capping on
Gemma 3, a non-integer query_pre_attn_scalar) raises `CheckpointError` naming the field. One extension: a Qwen2
config without QKV bias is exported with zero biases (Qwen2's projections always have one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from score_jax.checkpoints.errors import CheckpointError
from score_jax.checkpoints.hf import _param_sources
from score_jax.model.config import ModelConfig

ARCHITECTURES = {
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "gemma2": ("gemma2", "Gemma2ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}
EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
_ST_NAMES = {
    np.dtype(np.float32): "F32",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.float16): "F16",
}
_HF_ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}
_LAYER_TYPES = {"local": "sliding_attention", "global": "full_attention"}
DEFAULT_MAX_POSITIONS = 8192


def _refuse(cfg: ModelConfig, field: str, why: str) -> CheckpointError:
  arch = ARCHITECTURES[cfg.family][1]
  return CheckpointError(
      f"ModelConfig.{field}={getattr(cfg, field)!r}: {why}; {arch} cannot represent it"
  )


def check_exportable(cfg: ModelConfig) -> None:
  """Raises CheckpointError naming the first field that the family's HF class lacks."""
  if cfg.family not in ARCHITECTURES:
    raise CheckpointError(f"ModelConfig.family={cfg.family!r}: no Hugging Face architecture")
  gemma = cfg.family in ("gemma2", "gemma3")
  fixed = dict(
      norm_offset=gemma,
      post_norms=gemma,
      qk_norm=cfg.family == "gemma3",
      scale_embeddings=gemma,
  )
  for field, want in fixed.items():
    if getattr(cfg, field) != want:
      raise _refuse(cfg, field, f"the {cfg.family} family always has {field}={want}")
  if cfg.qkv_bias and cfg.family != "qwen2":
    raise _refuse(cfg, "qkv_bias", "QKV bias without an output bias")
  local = "local" in cfg.layer_types
  if local and cfg.family == "llama":
    raise _refuse(cfg, "layer_types", "sliding-window layers")
  if local and cfg.family != "gemma3":
    # Our local layers use rope_base_local and no scaling; HF's one RoPE serves every layer.
    if cfg.rope_base_local not in (None, cfg.rope_base):
      raise _refuse(cfg, "rope_base_local", "a separate RoPE base for sliding-window layers")
    if cfg.rope_scale != 1.0:
      raise _refuse(cfg, "rope_scale", "RoPE scaling on global but not on sliding-window layers")
  if cfg.family == "gemma3" and cfg.attn_logit_softcap is not None:
    # Gemma3Attention keeps config.attn_logit_softcapping but never applies it.
    raise _refuse(cfg, "attn_logit_softcap", "attention-logit soft-capping in Gemma 3")
  if not gemma:
    for field in ("attn_logit_softcap", "final_logit_softcap"):
      if getattr(cfg, field) is not None:
        raise _refuse(cfg, field, "logit soft-capping")
    if cfg.query_pre_attn_scalar not in (None, cfg.head_dim):
      raise _refuse(cfg, "query_pre_attn_scalar", "an attention scale other than head_dim**-0.5")
  elif cfg.query_pre_attn_scalar is not None and cfg.query_pre_attn_scalar != int(
      cfg.query_pre_attn_scalar
  ):
    raise _refuse(cfg, "query_pre_attn_scalar", "HF's query_pre_attn_scalar is an integer")


def _rope(theta: float, scale: float) -> dict:
  if scale == 1.0:
    return {"rope_type": "default", "rope_theta": float(theta)}
  return {"rope_type": "linear", "factor": float(scale), "rope_theta": float(theta)}


def hf_config(
    cfg: ModelConfig,
    *,
    dtype: str = "float32",
    bos_token_id: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    max_position_embeddings: int = DEFAULT_MAX_POSITIONS,
) -> dict[str, Any]:
  """The `config.json` dict of `cfg` (CheckpointError if transformers cannot represent it).

  dtype: the stored tensors' dtype (`config.json`'s "dtype"). max_position_embeddings:
  transformers' context length; our model has none (RoPE at any position), so the caller
  chooses it.
  """
  check_exportable(cfg)
  if dtype not in EXPORT_DTYPES:
    raise CheckpointError(f"dtype={dtype!r}: expected one of {tuple(EXPORT_DTYPES)}")
  model_type, arch = ARCHITECTURES[cfg.family]
  gemma = cfg.family in ("gemma2", "gemma3")
  n = cfg.num_layers
  layer_types = [_LAYER_TYPES[cfg.layer_type(i)] for i in range(n)]
  local = "sliding_attention" in layer_types
  out: dict[str, Any] = {
      "architectures": [arch],
      "model_type": model_type,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.embed_dim,
      "intermediate_size": cfg.hidden_dim,
      "num_hidden_layers": n,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "rms_norm_eps": float(cfg.norm_eps),
      "tie_word_embeddings": bool(cfg.tie_embeddings),
      "max_position_embeddings": int(max_position_embeddings),
      "attention_dropout": 0.0,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "pad_token_id": pad_token_id,
      "dtype": dtype,
  }
  if gemma:
    out["hidden_activation"] = _HF_ACTIVATIONS[cfg.activation]
    out["query_pre_attn_scalar"] = int(cfg.query_pre_attn_scalar or cfg.head_dim)
    out["attn_logit_softcapping"] = (
        None if cfg.attn_logit_softcap is None else float(cfg.attn_logit_softcap)
    )
    out["final_logit_softcapping"] = (
        None if cfg.final_logit_softcap is None else float(cfg.final_logit_softcap)
    )
    # Gemma builds a sliding-window mask even without local layers: keep a size there.
    out["sliding_window"] = int(cfg.sliding_window or 4096)
    out["layer_types"] = layer_types
    out["attention_bias"] = False
  else:
    out["hidden_act"] = _HF_ACTIVATIONS[cfg.activation]
  if cfg.family == "gemma3":
    out["use_bidirectional_attention"] = False
    out["rope_parameters"] = {
        "full_attention": _rope(cfg.rope_base, cfg.rope_scale),
        "sliding_attention": _rope(cfg.rope_base_local or cfg.rope_base, 1.0),
    }
  else:
    out["rope_parameters"] = _rope(cfg.rope_base, cfg.rope_scale)
  if cfg.family == "llama":
    out.update(attention_bias=False, mlp_bias=False, pretraining_tp=1)
  if cfg.family == "qwen2":
    out["use_sliding_window"] = local
    out["sliding_window"] = int(cfg.sliding_window) if local else None
    out["max_window_layers"] = layer_types.index("sliding_attention") if local else n
    out["layer_types"] = layer_types
  return out


def generation_config(
    *, bos_token_id: int | None, eos_token_ids, pad_token_id: int | None
) -> dict[str, Any]:
  """`generation_config.json`: generation stops at any of `eos_token_ids` (EOS and the
  end-of-turn tokens, i.e. the tokenizer's stop ids)."""
  eos = [int(i) for i in eos_token_ids]
  return {
      "bos_token_id": bos_token_id,
      "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
      "pad_token_id": pad_token_id,
  }


# ----------------------------------------------------------------------------- tensors


def flat_params(params) -> dict[tuple, Any]:
  """{(path...): array} of a Transformer, an nnx.State, or its pure dict, e.g. the "params"
  of a training checkpoint restored without a target (orbax gives the block indices as
  strings: '0' -> 0), keyed like `hf._param_sources`."""
  from flax import nnx

  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  if isinstance(params, nnx.State):
    params = nnx.to_pure_dict(params)
  out: dict[tuple, Any] = {}

  def walk(prefix, node):
    if isinstance(node, Mapping):
      for k, v in node.items():
        k = int(k) if isinstance(k, str) and k.isdigit() else k
        walk(prefix + (k,), v)
    elif isinstance(node, (list, tuple)):
      for i, v in enumerate(node):
        walk(prefix + (i,), v)
    else:
      out[prefix] = node.get_value() if hasattr(node, "get_value") else node

  walk((), params)
  return out


def _inverse(key: tuple):
  """Our array -> the HF array, undoing the importer's transform of parameter `key`."""
  last = key[-1]
  if key in (("embedding",),) or last == "scale":
    return lambda x: x
  if last in ("q_proj", "k_proj", "v_proj"):  # [D, N, H] -> [N*H, D]
    return lambda x: x.reshape(x.shape[0], -1).T
  if last == "o_proj":  # [N, H, D] -> [D, N*H]
    return lambda x: x.reshape(-1, x.shape[-1]).T
  if last in ("q_bias", "k_bias", "v_bias"):  # [N, H] -> [N*H]
    return lambda x: x.reshape(-1)
  if last in ("lm_head", "gate_proj", "up_proj", "down_proj"):
    return lambda x: x.T
  raise CheckpointError(f"no HF export known for parameter {key} (exporter bug)")


def hf_tensors(cfg: ModelConfig, params, dtype: str = "float32") -> dict[str, np.ndarray]:
  """{HF tensor name: array in `dtype`} of `params` (a Transformer, its nnx.State or its pure
  dict, e.g. restored from a training checkpoint), in the layout `load_hf_checkpoint` reads.

  Raises CheckpointError when `cfg` has no HF form or `params` misses a parameter / has
  one of another shape.
  """
  check_exportable(cfg)
  if dtype not in EXPORT_DTYPES:
    raise CheckpointError(f"dtype={dtype!r}: expected one of {tuple(EXPORT_DTYPES)}")
  dt = np.dtype(EXPORT_DTYPES[dtype])
  flat = flat_params(params)
  sources = _param_sources(cfg)
  extra = sorted(set(flat) - set(sources), key=str)
  if extra:
    raise CheckpointError(f"parameter {extra[0]} is not part of the {cfg.family} model of cfg")
  out: dict[str, np.ndarray] = {}
  for key, (name, hf_shape, _) in sources.items():
    if key not in flat:
      raise CheckpointError(f"parameter {key} ({name}) is missing")
    x = np.asarray(flat[key])
    arr = _inverse(key)(x)
    if tuple(arr.shape) != tuple(hf_shape):
      raise CheckpointError(
          f"parameter {key} has shape {list(x.shape)}: gives {name} of shape "
          f"{list(arr.shape)}, expected {list(hf_shape)}"
      )
    out[name] = np.ascontiguousarray(arr.astype(dt, copy=False))
  if cfg.family == "qwen2" and not cfg.qkv_bias:  # Qwen2's q/k/v projections have a bias
    for i in range(cfg.num_layers):
      a = f"model.layers.{i}.self_attn."
      out[a + "q_proj.bias"] = np.zeros((cfg.num_heads * cfg.head_dim,), dt)
      out[a + "k_proj.bias"] = np.zeros((cfg.num_kv_heads * cfg.head_dim,), dt)
      out[a + "v_proj.bias"] = np.zeros((cfg.num_kv_heads * cfg.head_dim,), dt)
  return out


# ----------------------------------------------------------------------------- files


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: dict | None = None
) -> None:
  """A safetensors file (little-endian, header padded to 8 bytes), written tensor by tensor.

  The inverse of `hf.SafetensorsFile`; unlike `safetensors.numpy` it writes bfloat16."""
  header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
  offset = 0
  names = sorted(tensors)
  for name in names:
    arr = tensors[name]
    if arr.dtype not in _ST_NAMES:
      raise CheckpointError(f"tensor {name!r}: dtype {arr.dtype} is not exported")
    header[name] = {
        "dtype": _ST_NAMES[arr.dtype],
        "shape": list(arr.shape),
        "data_offsets": [offset, offset + arr.nbytes],
    }
    offset += arr.nbytes
  raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
  raw += b" " * (-len(raw) % 8)
  with open(path, "wb") as f:
    f.write(len(raw).to_bytes(8, "little"))
    f.write(raw)
    for name in names:
      arr = np.ascontiguousarray(tensors[name])
      if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
      f.write(arr.reshape(-1).view(np.uint8).data)


def _dump(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")


def write_hf_directory(
    directory: str | os.PathLike,
    cfg: ModelConfig,
    params,
    *,
    dtype: str = "float32",
    tokenizer=None,
    bos_token_id: int | None = None,
    eos_token_ids=(),
    pad_token_id: int | None = None,
    max_position_embeddings: int = DEFAULT_MAX_POSITIONS,
    overwrite: bool = False,
) -> str:
  """Writes a Hugging Face model directory, atomically; returns its absolute path.

  model.safetensors, config.json, generation_config.json, and the tokenizer's files
  (`tokenizer.save(directory)`) when `tokenizer` is given, in which case its BOS / EOS /
  pad / stop ids are the ones recorded (else `bos_token_id`, `eos_token_ids`, `pad_token_id`).
  Everything is written into a temporary directory next to `directory` and renamed into
  place, so a failed export leaves nothing behind. An existing non-empty `directory` raises
  FileExistsError unless `overwrite`, which replaces it as a whole.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    if not os.path.isdir(directory):
      raise FileExistsError(f"{directory}: exists and is not a directory")
    if os.listdir(directory) and not overwrite:
      raise FileExistsError(f"{directory}: exists and is not empty")
  if tokenizer is not None:
    bos_token_id = tokenizer.bos_id if tokenizer.bos_id >= 0 else None
    eos_token_ids = tuple(tokenizer.stop_ids)
    pad_token_id = tokenizer.pad_id
  eos_token_ids = [int(i) for i in eos_token_ids]
  config = hf_config(
      cfg,
      dtype=dtype,
      bos_token_id=bos_token_id,
      eos_token_id=eos_token_ids[0] if eos_token_ids else None,
      pad_token_id=pad_token_id,
      max_position_embeddings=max_position_embeddings,
  )
  tensors = hf_tensors(cfg, params, dtype)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.export-", dir=parent)
  old = None
  try:
    write_safetensors(os.path.join(tmp, "model.safetensors"), tensors)
    del tensors
    _dump(os.path.join(tmp, "config.json"), config)
    gen = generation_config(
        bos_token_id=bos_token_id, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id
    )
    _dump(os.path.join(tmp, "generation_config.json"), gen)
    if tokenizer is not None:
      tokenizer.save(tmp)
    os.chmod(tmp, 0o755)  # mkdtemp's 0o700 -> an ordinary directory's mode
    if os.path.isdir(directory) and os.listdir(directory):  # overwrite (checked above)
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
      os.rename(directory, os.path.join(old, "d"))
    os.replace(tmp, directory)  # also onto an existing empty directory
  except BaseException:
    if old is not None and not os.path.exists(directory):  # put the replaced one back
      os.rename(os.path.join(old, "d"), directory)
    raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  return directory

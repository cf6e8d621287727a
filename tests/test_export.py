"""Hugging Face export: the inverse of the import, checked against transformers (float32,
eager) on tiny models of every family; the CLI round trip HF -> train 1 step -> export ->
transformers; bad input is one line and exit 2."""

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from score_jax import embedded_base  # noqa: E402
from score_jax.checkpoints import CheckpointError, config_from_hf, load_hf_checkpoint  # noqa: E402
from score_jax.checkpoints import hf_export  # noqa: E402
from score_jax.checkpoints import state as ckpt_lib  # noqa: E402
from score_jax.checkpoints.hf import SafetensorsFile, read_hf_config  # noqa: E402
from score_jax.model import init_model, tiny  # noqa: E402
from score_jax.model.config import ModelConfig  # noqa: E402
from score_jax.tokenizer import Tokenizer  # noqa: E402
from score_jax.train import read_run_config, write_run_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
CLASSES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}


def _hf_config(family):
  """Tiny configs that exercise each family's features (as tests/test_hf_parity.py's)."""
  if family == "llama":
    return transformers.LlamaConfig(
        num_hidden_layers=2,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0},
        **COMMON,
    )
  if family == "qwen2":
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


def _batch(vocab=V):
  """Row 0 full, row 1 right-padded (9 valid), row 2 left-padded (7 valid)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, (3, T))
  mask = np.ones((3, T), bool)
  mask[1, 9:] = False
  mask[2, :5] = False
  tokens[~mask] = 0
  return tokens, mask


def _save_random_hf(family, path, seed=0):
  torch.manual_seed(seed)
  model = getattr(transformers, CLASSES[family])(_hf_config(family)).eval()
  gemma = family.startswith("gemma")
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1 and "norm" in name and not gemma:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      elif p.ndim == 1:
        p.normal_(0.0, 0.3)
      else:
        p.normal_(0.0, 0.15)
  model.save_pretrained(path, safe_serialization=True)
  return path


def _hf_logits(path, tokens, mask):
  model = transformers.AutoModelForCausalLM.from_pretrained(
      path, attn_implementation="eager", dtype=torch.float32
  ).eval()
  positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
  with torch.no_grad():
    return model(
        input_ids=torch.tensor(tokens),
        attention_mask=torch.tensor(mask.astype(np.int64)),
        position_ids=torch.tensor(positions),
    ).logits.numpy()


def _ours(model, tokens, mask):
  return np.asarray(model(jnp.asarray(tokens), jnp.asarray(mask)))


def _max_err(a, b, mask):
  return float(np.abs(a - b)[mask].max())


# ----------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gemma3"])
def test_import_then_export_is_the_identity(family, tmp_path):
  src = _save_random_hf(family, tmp_path / "src")
  cfg, model = load_hf_checkpoint(src)
  out = hf_export.write_hf_directory(tmp_path / "out", cfg, model, eos_token_ids=[2, 5])
  assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors"]
  hf = read_hf_config(out)
  assert hf["architectures"] == [CLASSES[family]]
  assert hf["model_type"] == ("gemma3_text" if family == "gemma3" else family)
  assert config_from_hf(hf) == cfg
  assert json.load(open(os.path.join(out, "generation_config.json")))["eos_token_id"] == [2, 5]

  original, exported = load_file(os.path.join(src, "model.safetensors")), load_file(
      os.path.join(out, "model.safetensors")
  )
  assert sorted(exported) == sorted(original)
  for name, want in original.items():
    assert exported[name].dtype == np.float32
    np.testing.assert_array_equal(exported[name], want, err_msg=name)

  tokens, mask = _batch()
  theirs, ours = _hf_logits(out, tokens, mask), _ours(model, tokens, mask)
  assert _max_err(theirs, ours, mask) < 1e-4
  assert _max_err(theirs, _hf_logits(src, tokens, mask), mask) < 1e-6


def _embedded_like():
  """The embedded base model's architecture (Gemma 3 flags, all-global, no window)."""
  return embedded_base.BaseRecipe(embed_dim=64).model_config(200)


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("llama", tiny("llama")),
        ("qwen2", tiny("qwen2")),
        ("qwen2_no_bias", tiny("qwen2", qkv_bias=False)),
        ("qwen2_window", tiny("qwen2", layer_types=("global", "local"), sliding_window=3)),
        ("gemma2", tiny("gemma2")),
        ("gemma2_no_caps", tiny("gemma2", attn_logit_softcap=None, final_logit_softcap=None)),
        ("gemma3", tiny("gemma3", rope_scale=4.0, final_logit_softcap=5.0)),
        ("embedded", _embedded_like()),
        ("llama_gelu_untied", tiny("llama", activation="gelu_tanh", num_kv_heads=4)),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_random_models_export(name, cfg, tmp_path):
  """Our own configs (model.source random / embedded), including fields the tiny HF
  models above leave at their defaults: transformers computes the same logits."""
  model = init_model(cfg, seed=3)
  state = nnx.state(model)  # random norm scales and biases (they start at 0 / 1)
  for path, var in nnx.to_flat_state(state):
    if var.get_value().ndim <= 2 and (path[-1] == "scale" or path[-1].endswith("bias")):
      shape = var.get_value().shape
      noise = np.random.default_rng(len(path)).normal(0, 0.3, shape).astype(np.float32)
      var.set_value(var.get_value() + noise)
  nnx.update(model, state)
  out = hf_export.write_hf_directory(tmp_path / "out", cfg, model)
  tokens, mask = _batch(cfg.vocab_size)
  assert _max_err(_hf_logits(out, tokens, mask), _ours(model, tokens, mask), mask) < 1e-4
  back, _ = load_hf_checkpoint(out)  # and our importer reads it back
  want = cfg.replace(qkv_bias=True) if name == "qwen2_no_bias" else cfg
  if not want.layer_types:  # the window of a model without local layers is not kept
    want = want.replace(sliding_window=None)
  if want.query_pre_attn_scalar is None and want.family.startswith("gemma"):
    want = want.replace(query_pre_attn_scalar=float(want.head_dim))
  if want.rope_base_local is None and want.family == "gemma3":
    want = want.replace(rope_base_local=want.rope_base)
  assert back == want


def test_bfloat16_export(tmp_path):
  cfg = tiny("gemma3")
  model = init_model(cfg, seed=1)
  out = hf_export.write_hf_directory(tmp_path / "out", cfg, model, dtype="bfloat16")
  assert read_hf_config(out)["dtype"] == "bfloat16"
  st = SafetensorsFile(os.path.join(out, "model.safetensors"))
  f32 = hf_export.hf_tensors(cfg, model)
  assert set(st.entries) == set(f32)
  for name, want in f32.items():
    got = st.get(name)
    assert str(got.dtype) == "bfloat16"
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(got.dtype).astype(np.float32))
  hf = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "cfg, field",
    [
        (tiny("llama", qk_norm=True), "qk_norm"),
        (tiny("gemma2", norm_offset=False), "norm_offset"),
        (tiny("llama", qkv_bias=True), "qkv_bias"),
        (tiny("llama", layer_types=("local", "global"), sliding_window=4), "layer_types"),
        (
            tiny("qwen2", layer_types=("local", "global"), sliding_window=4, rope_scale=2.0),
            "rope_scale",
        ),
        (tiny("gemma2", rope_base_local=1e3), "rope_base_local"),
        (tiny("llama", final_logit_softcap=30.0), "final_logit_softcap"),
        (tiny("qwen2", query_pre_attn_scalar=20.0), "query_pre_attn_scalar"),
        (tiny("gemma3", query_pre_attn_scalar=20.5), "query_pre_attn_scalar"),
        (tiny("gemma3", attn_logit_softcap=50.0), "attn_logit_softcap"),  # HF ignores it
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_unrepresentable_configs_are_refused(cfg, field, tmp_path):
  with pytest.raises(CheckpointError, match=rf"^ModelConfig\.{field}=.*cannot represent it"):
    hf_export.hf_config(cfg)
  with pytest.raises(CheckpointError, match=rf"^ModelConfig\.{field}="):
    hf_export.write_hf_directory(tmp_path / "out", cfg, init_model(cfg))
  assert not os.listdir(tmp_path)  # nothing written


def test_failed_write_leaves_nothing_and_overwrite_replaces(tmp_path, monkeypatch):
  cfg = tiny("llama")
  model = init_model(cfg)
  out = tmp_path / "out"

  class Broken:
    bos_id, pad_id, stop_ids = 2, 0, (1,)

    def save(self, directory):
      raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    hf_export.write_hf_directory(out, cfg, model, tokenizer=Broken())
  assert os.listdir(tmp_path) == []
  hf_export.write_hf_directory(out, cfg, model)
  with pytest.raises(FileExistsError, match="not empty"):
    hf_export.write_hf_directory(out, cfg, model)
  (out / "stale.txt").write_text("x")
  with pytest.raises(OSError, match="disk full"):  # a failed overwrite keeps the old one
    hf_export.write_hf_directory(out, cfg, model, tokenizer=Broken(), overwrite=True)
  assert (out / "stale.txt").exists() and sorted(os.listdir(tmp_path)) == ["out"]
  hf_export.write_hf_directory(out, cfg, model, overwrite=True)
  assert not (out / "stale.txt").exists() and sorted(os.listdir(tmp_path)) == ["out"]
  assert (oct(os.stat(out).st_mode & 0o777)) == "0o755"


# ----------------------------------------------------------------------------- the CLI

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there",
    "numbers 12345 and 678",
] * 20


def _spm_model() -> bytes:
  import sentencepiece as spm

  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS),
      model_writer=out,
      vocab_size=80,
      hard_vocab_limit=False,
      model_type="bpe",
      pad_id=0,
      eos_id=1,
      bos_id=2,
      unk_id=3,
      bos_piece="<bos>",
      eos_piece="<eos>",
      control_symbols=["<start_of_turn>", "<end_of_turn>"],
      num_threads=1,
      minloglevel=2,
  )
  return out.getvalue()


def _env():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop("SCORE_JAX_DEBUG", None)
  return env


def _cli(module, *args, timeout=300):
  return subprocess.run(
      [sys.executable, "-m", f"score_jax.{module}", *args],
      cwd=REPO,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
  )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """(source HF dir, workdir): a tiny Llama checkpoint + tokenizer, trained for 2 steps (the
  first one's learning rate is 0: the warm-up starts there)."""
  root = tmp_path_factory.mktemp("run")
  src = _save_random_hf("llama", root / "src")
  (src / "tokenizer.model").write_bytes(_spm_model())
  workdir = root / "work"
  r = _cli(
      "train",
      "--config=configs/toy.py",
      f"--workdir={workdir}",
      "--config.model.source=hf",
      f"--config.model.path={src}",
      "--config.stage_steps=(2,0)",
      "--config.task.num_eval=0",
      "--config.checkpoint_every=0",
      "--config.mesh.num_devices=1",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  return src, workdir


def _restored_policy(src, workdir):
  """Our policy with the run's last checkpoint."""
  _, model = load_hf_checkpoint(src)
  tree, _ = ckpt_lib.Checkpointer(workdir / "checkpoints").restore()
  flat = hf_export.flat_params(tree["params"])  # orbax gives the block indices as '0', '1'
  state = nnx.state(model)
  for path, var in nnx.to_flat_state(state):
    var.set_value(jnp.asarray(flat[tuple(path)]))
  nnx.update(model, state)
  return model, int(tree["step"])


def test_cli_round_trip(trained_run, tmp_path):
  src, workdir = trained_run
  run_config = json.load(open(workdir / "config.json"))  # the trainer recorded the config
  assert run_config["model"]["source"] == "hf" and run_config["stage_steps"] == [2, 0]
  out = tmp_path / "hf_out"
  r = _cli("export", f"--workdir={workdir}", f"--out={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "LlamaForCausalLM from step 2" in r.stdout

  model, step = _restored_policy(src, workdir)
  assert step == 2
  tokens, mask = _batch()
  theirs = _hf_logits(out, tokens, mask)
  assert _max_err(theirs, _ours(model, tokens, mask), mask) < 1e-4
  # The step trained: the exported weights are not the source checkpoint's.
  before = load_file(os.path.join(src, "model.safetensors"))
  after = load_file(os.path.join(out, "model.safetensors"))
  assert sorted(before) == sorted(after)
  assert max(float(np.abs(after[k] - before[k]).max()) for k in before) > 1e-6
  assert _max_err(theirs, _hf_logits(src, tokens, mask), mask) > 1e-6

  tok = Tokenizer.from_file(src / "tokenizer.model")
  hf = read_hf_config(out)
  gen = json.load(open(out / "generation_config.json"))
  assert (hf["bos_token_id"], hf["eos_token_id"], hf["pad_token_id"]) == (2, 1, 0)
  assert tok.stop_ids == (1, 5)
  assert gen == {"bos_token_id": 2, "eos_token_id": [1, 5], "pad_token_id": 0}
  assert transformers.GenerationConfig.from_pretrained(out).eos_token_id == [1, 5]
  if not hasattr(Tokenizer, "save"):
    pytest.skip("Tokenizer.save does not exist yet: the tokenizer files are not checked")
  files = set(os.listdir(out))
  assert "tokenizer_config.json" in files and files & {"tokenizer.json", "tokenizer.model"}
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  text = "hello world, the quick brown fox"
  assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text, add_bos=False)


def test_cli_checkpoint_dir_step_dtype_and_config_override(trained_run, tmp_path):
  """A workdir from before config.json: refused by name; --config rebuilds the run's."""
  src, workdir = trained_run
  old = tmp_path / "old_run"
  shutil.copytree(workdir / "checkpoints", old / "checkpoints")
  r = _cli("export", f"--checkpoint_dir={old / 'checkpoints'}", f"--out={tmp_path / 'x'}")
  assert r.returncode == 2, r.stderr[-3000:]
  assert r.stderr.splitlines() == [r.stderr.strip()] and "no config.json" in r.stderr
  assert r.stderr.startswith(f"error: --checkpoint_dir='{old / 'checkpoints'}': ")

  out = tmp_path / "bf16"
  r = _cli(
      "export",
      f"--checkpoint_dir={old}",  # a workdir is accepted there too
      f"--out={out}",
      "--step=2",
      "--dtype=bfloat16",
      "--config=configs/toy.py",
      "--config.model.source=hf",
      f"--config.model.path={src}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  model, _ = _restored_policy(src, workdir)
  st = SafetensorsFile(os.path.join(out, "model.safetensors"))
  want = hf_export.hf_tensors(model.cfg, model)
  assert set(st.entries) == set(want)
  for name, x in want.items():
    got = st.get(name)
    np.testing.assert_array_equal(
        got.astype(np.float32), x.astype(got.dtype).astype(np.float32), err_msg=name
    )


def _shipped_config(name):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_embedded_run_exports(tmp_path):
  """model.source='embedded' (its base restores with orbax, outside eval_shape) through
  `export.export`, on a stand-in base directory and a checkpoint saved as the trainer does."""
  import dataclasses

  from score_jax import export

  tok_proto = _spm_model()
  recipe = embedded_base.BaseRecipe(embed_dim=32, num_heads=2, num_kv_heads=1)
  cfg = recipe.model_config(Tokenizer.from_proto(tok_proto).vocab_size)
  base = tmp_path / "base"
  base.mkdir()
  (base / "tokenizer.model").write_bytes(tok_proto)
  (base / "model.json").write_text(json.dumps(dataclasses.asdict(cfg)))
  (base / "base.json").write_text("{}")
  embedded_base._save_params(str(base), init_model(cfg, seed=5))
  config = _shipped_config("embedded")
  config.model.path = str(base)
  config.model.base.update(embed_dim=32, num_heads=2, num_kv_heads=1)
  workdir = tmp_path / "work"
  write_run_config(config, str(workdir))
  trained = init_model(cfg, seed=6)  # "the policy after training"
  with ckpt_lib.Checkpointer(workdir / "checkpoints") as ckpt:
    ckpt.save(3, {"params": nnx.state(trained), "step": jnp.int32(3)})
  out = export.export(str(tmp_path / "hf"), workdir=str(workdir))
  hf = read_hf_config(out)
  assert (hf["architectures"], hf["model_type"]) == (["Gemma3ForCausalLM"], "gemma3_text")
  assert json.load(open(os.path.join(out, "generation_config.json")))["eos_token_id"] == [1, 5]
  tokens, mask = _batch(cfg.vocab_size)
  assert _max_err(_hf_logits(out, tokens, mask), _ours(trained, tokens, mask), mask) < 1e-4


def test_cli_bad_input_is_one_line(tmp_path):
  empty_run = tmp_path / "empty_run"  # a run that has not saved a checkpoint yet
  (empty_run / "checkpoints").mkdir(parents=True)
  write_run_config(_shipped_config("toy"), str(empty_run))
  assert read_run_config(str(empty_run / "config.json")).to_dict() == json.loads(
      _shipped_config("toy").to_json()
  )
  full_out = tmp_path / "full"
  full_out.mkdir()
  (full_out / "model.safetensors").write_text("x")
  cases = {
      "missing_workdir": (
          [f"--workdir={tmp_path / 'nope'}", f"--out={tmp_path / 'o1'}"],
          f"--workdir='{tmp_path / 'nope'}': no such directory",
      ),
      "no_checkpoint": (
          [f"--workdir={empty_run}", f"--out={tmp_path / 'o2'}"],
          f"--workdir='{empty_run}': no checkpoint in",
      ),
      "out_not_empty": (
          [f"--workdir={empty_run}", f"--out={full_out}"],
          f"--out='{full_out}': exists and is not empty; pass --overwrite",
      ),
      "no_out": ([f"--workdir={empty_run}"], "--out='': required"),
      "bad_dtype": (["--dtype=int8", f"--workdir={empty_run}"], "--dtype='int8'"),
  }
  procs = {
      name: subprocess.Popen(
          [sys.executable, "-m", "score_jax.export", *args],
          cwd=REPO,
          env=_env(),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for name, (args, _) in cases.items()
  }
  for name, p in procs.items():
    stdout, stderr = p.communicate(timeout=120)
    lines = stderr.splitlines()
    assert p.returncode == 2, (name, stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"error: {cases[name][1]}"), (name, stderr)
    assert "Traceback" not in stdout + stderr
  assert sorted(os.listdir(tmp_path)) == ["empty_run", "full"]  # nothing else written
  assert os.listdir(full_out) == ["model.safetensors"]

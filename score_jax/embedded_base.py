"""The embedded base model: a complete SCoRe setting with nothing to download.

* Task: pair sums (`score_jax.tasks.pair_sum`), exact checker, unlimited fresh problems,
  a held-out split disjoint by construction.
* Tokenizer: SentencePiece (BPE) trained on the task's text in about a second.
* Base model: a tiny transformer of our own model code (Gemma 3 style), trained by SFT on
  *first attempts only*, as a pretrained model would be: it has never seen a second turn, so
  its prompted self-correction behaves like the paper's base models (Δ ≤ 0). The first
  attempts come from a careless but honest solver (`pair_sum.noisy_attempt`): a fraction of
  them name a wrong pair, always with its true check ("3 + 9 = 12 ≠ 20"), and with `habit`
  it often adds the first two numbers on large targets, a slip the model then makes greedily.
  The noise is what makes the base model learn to *work out* the check it writes instead of
  copying the target, so that its mistakes are visible to a second attempt (see
  WORKSPACE.md, "The embedded task").

The base model is built once and cached in a directory (`config.model.path`, default
`$SCORE_JAX_CACHE/embedded_base-<recipe hash>`, `$SCORE_JAX_CACHE` defaulting to
~/.cache/score_jax). It is written to a temporary directory and renamed when complete, so an
interrupted build never leaves a half-written model behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from score_jax import sft as sft_lib
from score_jax.environments.embedded import (
    CORRECTION,
    SPECIAL,
    PairSumEnvironment,
    instruction_text,
    response_text,
    task_module,
)
from score_jax.model import ModelConfig, Transformer, abstract_model, init_model
from score_jax.tasks import pair_sum, sort_list
from score_jax.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

FORMAT_VERSION = 4  # bump when the recipe's meaning changes: cached base models rebuild


@dataclasses.dataclass(frozen=True)
class BaseRecipe:
  """Everything that determines the base model (its hash names the cache directory)."""

  spec: pair_sum.Spec | sort_list.Spec = pair_sum.Spec()
  family: str = "pair_sum"
  vocab_size: int = 256
  num_layers: int = 2
  embed_dim: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  noise: float = 0.3
  habit: float = 0.0  # pair_sum: P(first two numbers) when the target > habit_above
  habit_above: int = 22
  dialogue: int = 1  # SFT conversations hold 1..dialogue independent problems
  preamble: float = 0.0  # P(a later SFT user turn opens with the CORRECTION sentence)
  sft: sft_lib.SFTConfig = sft_lib.SFTConfig()
  seed: int = 0

  def model_config(self, vocab_size: int) -> ModelConfig:
    d = self.embed_dim
    return ModelConfig(
        family="gemma3",
        vocab_size=vocab_size,
        num_layers=self.num_layers,
        embed_dim=d,
        hidden_dim=4 * d,
        num_heads=self.num_heads,
        num_kv_heads=self.num_kv_heads,
        head_dim=d // self.num_heads,
        norm_offset=True,
        post_norms=True,
        qk_norm=True,
        activation="gelu_tanh",
        tie_embeddings=True,
        scale_embeddings=True,
    )

  def fingerprint(self) -> str:
    text = json.dumps(
        [FORMAT_VERSION, instruction_text(self.family), dataclasses.asdict(self)], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_tokenizer(recipe: BaseRecipe, num_problems: int = 3000) -> bytes:
  """A BPE SentencePiece model of the task's text (prompts, answers, instruction, template)."""
  import sentencepiece as spm

  task = task_module(recipe.family)
  ps = task.problems("sft", 0, num_problems, recipe.spec, recipe.seed)
  rng = np.random.default_rng(recipe.seed)
  text = [p.prompt for p in ps] + [response_text(task.noisy_attempt(p, rng, 0.5)) for p in ps]
  text += [instruction_text(recipe.family)] * (num_problems // 10)
  text += ["user", "model"] * (num_problems // 10)
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(text),
      model_writer=buf,
      vocab_size=recipe.vocab_size,
      model_type="bpe",
      pad_id=SPECIAL["pad"],
      eos_id=SPECIAL["eos"],
      bos_id=SPECIAL["bos"],
      unk_id=SPECIAL["unk"],
      pad_piece="<pad>",
      eos_piece="<eos>",
      bos_piece="<bos>",
      unk_piece="<unk>",
      control_symbols=["<start_of_turn>", "<end_of_turn>"],
      user_defined_symbols=["\n", "?"],
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      hard_vocab_limit=False,
      num_threads=1,
      minloglevel=2,
  )
  return buf.getvalue()


def first_attempt_examples(
    env: PairSumEnvironment,
    problems: Sequence[pair_sum.Problem],
    rng: np.random.Generator,
    noise: float,
    dialogue: int = 1,
    preamble: float = 0.0,
    **habit,
):
  """Conversations of the careless solver: what the base model sees.

  Each holds 1..`dialogue` *independent* problems, each answered once (a first attempt), so
  the model learns to answer a problem at any position of a conversation but never sees a
  problem asked twice or an answer revised."""
  out, i = [], 0
  while i < len(problems):
    # dialogue=1 draws no conversation length, so the default SFT data stays as it was.
    k = 1 if dialogue == 1 else min(int(rng.integers(1, dialogue + 1)), len(problems) - i)
    segments = []
    for j, p in enumerate(problems[i : i + k]):
      if j == 0:
        ctx = env.prompt_tokens([p])[0]
      else:
        ctx = env.turn_tokens((CORRECTION + "\n" if rng.random() < preamble else "") + p.prompt)
      segments += [ctx, env.response_tokens(env.task.noisy_attempt(p, rng, noise, **habit))]
    out.append(tuple(segments))
    i += k
  return out


def default_base_dir(recipe: BaseRecipe) -> str:
  root = os.environ.get("SCORE_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "score_jax"
  )
  return os.path.join(root, f"embedded_base-{recipe.fingerprint()}")


def _save_params(directory: str, model: Transformer) -> None:
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, "params"), nnx.to_pure_dict(nnx.state(model)))


def build_base_model(directory: str, recipe: BaseRecipe) -> dict:
  """Trains the tokenizer and the SFT base model and writes them to `directory` atomically.

  Returns the build summary (also written to `base.json`)."""
  t0 = time.perf_counter()
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
  try:
    proto = train_tokenizer(recipe)
    tok = Tokenizer.from_proto(proto)
    env = PairSumEnvironment(tok, recipe.spec, family=recipe.family)
    model = init_model(recipe.model_config(tok.vocab_size), seed=recipe.seed)
    cfg = recipe.sft
    print(
        f"building the embedded base model ({recipe.num_layers} layers, d={recipe.embed_dim}, "
        f"vocab {tok.vocab_size}): SFT on first attempts, {cfg.steps} steps",
        flush=True,
    )

    per_step = cfg.batch_size * recipe.dialogue

    def batch(step):
      rng = np.random.default_rng([recipe.seed, step])
      examples = first_attempt_examples(
          env,
          env.task.problems("sft", step * per_step, per_step, recipe.spec, recipe.seed),
          rng,
          recipe.noise,
          recipe.dialogue,
          recipe.preamble,
          **({"habit": recipe.habit, "habit_above": recipe.habit_above} if recipe.habit else {}),
      )
      return examples[: cfg.batch_size]  # conversations hold >= 1 problem: enough of them

    def progress(step, loss):
      print(
          f"  sft {step}/{cfg.steps} loss {loss:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True
      )

    losses = sft_lib.finetune(model, batch, cfg, tok.pad_id, progress)
    with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
      f.write(proto)
    with open(os.path.join(tmp, "model.json"), "w") as f:
      json.dump(dataclasses.asdict(model.cfg), f, indent=1)
    _save_params(tmp, model)
    summary = {
        "recipe": dataclasses.asdict(recipe),
        "fingerprint": recipe.fingerprint(),
        "final_sft_loss": losses[-1],
        "build_seconds": time.perf_counter() - t0,
    }
    with open(os.path.join(tmp, "base.json"), "w") as f:
      json.dump(summary, f, indent=1)
    try:
      os.rename(tmp, directory)  # atomic; fails if another process finished first
    except OSError:
      if not is_complete(directory):
        raise
      logger.info("another process built %s first; using it", directory)
    return summary
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def is_complete(directory: str) -> bool:
  return all(
      os.path.exists(os.path.join(directory, f))
      for f in ("tokenizer.model", "model.json", "base.json", "params")
  )


def ensure_base_model(recipe: BaseRecipe, directory: str = "") -> str:
  """The base model directory of `recipe` (`directory`, or the cache's), built first if missing.

  This is the one place the embedded setting trains a model; it says so on the console."""
  directory = directory or default_base_dir(recipe)
  if os.path.exists(directory) and not is_complete(directory):
    raise FileNotFoundError(
        f"config.model.path={directory!r} exists but is not a complete embedded base model "
        "(needs tokenizer.model, model.json, base.json, params/); remove it to rebuild"
    )
  if os.path.exists(directory):
    logger.info("embedded base model %s: cached", directory)
  else:
    logger.info("embedded base model %s: not cached, building it (one time)", directory)
    build_base_model(directory, recipe)
  return directory


def load_tokenizer(directory: str) -> Tokenizer:
  return Tokenizer.from_file(os.path.join(directory, "tokenizer.model"))


def load_model(directory: str, dtype: str | None = None) -> Transformer:
  with open(os.path.join(directory, "model.json")) as f:
    fields = json.load(f)
  fields["layer_types"] = tuple(fields.get("layer_types") or ())
  if dtype:
    fields["dtype"] = dtype
  cfg = ModelConfig(**fields)
  graphdef, state = nnx.split(abstract_model(cfg))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(state))
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(os.path.join(os.path.abspath(directory), "params"), target)
  nnx.replace_by_pure_dict(state, restored)
  return nnx.merge(graphdef, state)

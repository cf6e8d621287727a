r"""Export a trained policy to a Hugging Face directory (transformers loads it as is).

  python -m score_jax.export --workdir=/tmp/run --out=/tmp/hf_out            # latest step
  python -m score_jax.export --workdir=/tmp/run --out=/tmp/hf_out --step=200 --dtype=bfloat16
  python -m score_jax.export --checkpoint_dir=/tmp/run/checkpoints --out=/tmp/hf_out

Reads the run's config (<workdir>/config.json, which `score_jax.train` writes; `--config`
replaces it, e.g. for a workdir from before that file existed), rebuilds the run's model
(shapes only) and tokenizer through `score_jax.build`, restores the checkpoint's params and
writes --out with model.safetensors (float32, or --dtype), config.json (LlamaForCausalLM,
Qwen2ForCausalLM, Gemma2ForCausalLM or Gemma3ForCausalLM), generation_config.json (BOS, EOS
and the end-of-turn stop ids) and the tokenizer's files. --out is written atomically (a
temporary directory renamed into place): a failed export leaves nothing behind.

--workdir is the training run's directory (config.json + checkpoints/). --checkpoint_dir is
its checkpoints/ folder (as for `score_jax.evaluate`; a workdir is accepted there too);
without --workdir the config is read next to it. The pure mapping (ModelConfig -> HF
config, our params -> HF tensors) is `score_jax.checkpoints.hf_export`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class _Vocabulary:
  """What `build.policy` reads of an environment (the vocabulary size), for runs whose
  environment would read task files or need a code sandbox that an export does not."""

  tokenizer: Any

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size


def _locate(workdir: str, checkpoint_dir: str) -> tuple[str, str, str]:
  """(`--flag=value` that names the checkpoints, checkpoints folder, run directory)."""
  if not workdir and not checkpoint_dir:
    raise ValueError("--workdir='': required (the training run's directory), or --checkpoint_dir")
  for flag, path in (("workdir", workdir), ("checkpoint_dir", checkpoint_dir)):
    if path and not os.path.isdir(path):
      raise FileNotFoundError(f"--{flag}={path!r}: no such directory")
  if checkpoint_dir:
    ckpts = checkpoint_dir
    if os.path.isdir(os.path.join(checkpoint_dir, "checkpoints")):  # a workdir
      ckpts = os.path.join(checkpoint_dir, "checkpoints")
    run = workdir or os.path.dirname(os.path.abspath(ckpts))
    return f"--checkpoint_dir={checkpoint_dir!r}", ckpts, run
  ckpts = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpts):
    raise FileNotFoundError(
        f"--workdir={workdir!r}: no checkpoints/ folder (not a score_jax.train workdir?)"
    )
  return f"--workdir={workdir!r}", ckpts, workdir


def _run_config(flag: str, run: str, override):
  """The run's ConfigDict: `override` (--config) or <run>/config.json, validated."""
  from score_jax import config_lib
  from score_jax.train import RUN_CONFIG, read_run_config

  if override is not None:
    config = override
  else:
    path = os.path.join(run, RUN_CONFIG)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"{flag}: no {RUN_CONFIG} in {run} (score_jax.train writes it at start; for an "
          "older run pass --config=configs/<name>.py with the run's --config.* overrides)"
      )
    try:
      config = read_run_config(path)
    except (ValueError, TypeError) as e:
      raise ValueError(f"{flag}: {path} is not a run config: {e}") from e
  config_lib.validate(config)  # ConfigError: 'config.<field>=<value>: <why>'
  return config


def _parts(config):
  """(environment-like, tokenizer or None, policy) of the run's config; the policy is
  abstract (shapes only) except for the tiny embedded base model."""
  from flax import nnx

  from score_jax import build

  task = build.loop_settings(config).task_name
  if task in ("toy", "embedded"):  # no task files: the real environment is cheap
    env = build.environment(config)
    tok = env.tokenizer
    if tok is None:
      try:  # a toy run may still name the model's tokenizer (e.g. model.source=hf)
        tok = build.tokenizer(config)
      except (ValueError, OSError):
        tok = None
  else:  # the ids and vocabulary are the tokenizer's; the tasks are not needed
    tok = build.tokenizer(config)
    env = _Vocabulary(tok)
  if config.model.source == "embedded":  # orbax restores it, which cannot run under
    model = build.policy(config, env)  # eval_shape's tracing; a tiny model, built for real
  else:  # shapes only: the base weights are read but never held
    model = nnx.eval_shape(lambda: build.policy(config, env))
  return env, tok, model


def _checkpointer(flag: str, ckpts: str, step: int | None):
  """The run's Checkpointer, once it is known to hold `step` (None: any step). The steps
  are listed first without orbax (its step directories are named by the step), so that
  an input error stays one line (orbax logs as it starts)."""
  from score_jax.checkpoints import state as ckpt_lib

  steps = sorted(
      int(d) for d in os.listdir(ckpts) if d.isdigit() and os.path.isdir(os.path.join(ckpts, d))
  )
  if not steps:
    raise FileNotFoundError(f"{flag}: no checkpoint in {os.path.abspath(ckpts)}")
  if step is not None and step not in steps:
    raise ValueError(f"--step={step}: not in {os.path.abspath(ckpts)} (steps: {steps})")
  return ckpt_lib.Checkpointer(ckpts)


def _restore(flag: str, ckpt, step: int | None, model):
  """The params of `step` (None: the latest readable one), checked against `model`."""
  from flax import nnx

  from score_jax.checkpoints import CheckpointError
  from score_jax.checkpoints import hf_export

  try:
    tree, _ = ckpt.restore(step)
  except CheckpointError as e:
    raise ValueError(f"--step={step}: {e}" if step is not None else f"{flag}: {e}") from e
  restored = hf_export.flat_params(tree["params"])
  want = hf_export.flat_params(nnx.state(model, nnx.Param))
  for key, var in want.items():
    got = restored.get(key)
    if got is None or tuple(got.shape) != tuple(var.shape):
      raise ValueError(
          f"{flag}: the checkpoint's params do not fit the run config's model: parameter "
          f"{key} is {None if got is None else list(got.shape)}, the model's {list(var.shape)}"
      )
  return tree["params"], int(tree["step"])


def export(
    out: str,
    *,
    workdir: str = "",
    checkpoint_dir: str = "",
    step: int | None = None,
    dtype: str = "float32",
    config=None,
    overwrite: bool = False,
    max_position_embeddings: int = 8192,
) -> str:
  """The CLI's work: the run's policy at `step` (None: latest) -> a HF directory at `out`.

  Input errors are ValueError / OSError whose message starts with the flag they are about.
  """
  from score_jax import cli
  from score_jax.checkpoints import CheckpointError
  from score_jax.checkpoints import hf_export

  if not out:
    raise ValueError("--out='': required (the Hugging Face directory to write)")
  if os.path.exists(out) and (not os.path.isdir(out) or (os.listdir(out) and not overwrite)):
    what = "is not a directory" if not os.path.isdir(out) else "exists and is not empty"
    raise FileExistsError(f"--out={out!r}: {what}" + ("" if overwrite else "; pass --overwrite"))
  if step is not None and step < 0:
    raise ValueError(f"--step={step}: must be non-negative (or omitted: the latest)")
  if max_position_embeddings <= 0:
    raise ValueError(f"--max_position_embeddings={max_position_embeddings}: must be positive")
  flag, ckpts, run = _locate(workdir, checkpoint_dir)
  real = lambda p: os.path.realpath(p) + os.sep  # noqa: E731
  if real(run).startswith(real(out)) or real(ckpts).startswith(real(out)):
    raise ValueError(f"--out={out!r}: is (or holds) the run's directory; choose another")
  config = _run_config(flag, run, config)
  ckpt = _checkpointer(flag, ckpts, step)
  try:
    env, tok, model = _parts(config)
  except (OSError, CheckpointError) as e:  # e.g. the base model's files are gone
    if cli.is_input_error(e):
      raise
    raise ValueError(f"{flag}: the run's model or tokenizer does not load: {e}") from e
  cfg = model.cfg
  try:
    hf_export.check_exportable(cfg)
  except CheckpointError as e:
    raise ValueError(f"{flag}: the run's model has no Hugging Face form: {e}") from e
  params, restored_step = _restore(flag, ckpt, step, model)
  if tok is None:
    logger.warning("the run has no tokenizer (toy task): exporting the model without one")
  ids = dict(eos_token_ids=tuple(env.stop_ids), pad_token_id=env.pad_id)
  if tok is not None:
    ids = dict(
        bos_token_id=tok.bos_id if tok.bos_id >= 0 else None,
        eos_token_ids=tuple(tok.stop_ids),
        pad_token_id=tok.pad_id,
    )
  # TODO: drop this guard once `Tokenizer.save` (being added to score_jax/tokenizer.py) is in.
  saves = tok is not None and hasattr(tok, "save")
  if tok is not None and not saves:
    logger.warning("Tokenizer.save is not available yet: exporting without tokenizer files")
  path = hf_export.write_hf_directory(
      out,
      cfg,
      params,
      dtype=dtype,
      tokenizer=tok if saves else None,
      max_position_embeddings=max_position_embeddings,
      overwrite=overwrite,
      **ids,
  )
  arch = hf_export.ARCHITECTURES[cfg.family][1]
  print(f"wrote {path}: {arch} from step {restored_step} of {os.path.abspath(ckpts)} ({dtype})")
  return path


def main(argv):
  del argv
  from absl import flags

  from score_jax import cli

  FLAGS = flags.FLAGS
  cli.configure_logging()
  export(
      FLAGS.out,
      workdir=FLAGS.workdir or "",
      checkpoint_dir=FLAGS.checkpoint_dir or "",
      step=FLAGS.step,
      dtype=FLAGS.dtype,
      config=FLAGS.config,
      overwrite=FLAGS.overwrite,
      max_position_embeddings=FLAGS.max_position_embeddings,
  )


def _define_flags():
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
      "config", None, "Override: configs/<name>.py[:arg] (default: <workdir>/config.json)"
  )
  flags.DEFINE_string("workdir", "", "The training run's directory (config.json, checkpoints/).")
  flags.DEFINE_string(
      "checkpoint_dir", "", "Its checkpoints/ folder (default: <workdir>/checkpoints)."
  )
  flags.DEFINE_string("out", "", "The Hugging Face directory to write.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest readable one).")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Tensor dtype.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --out.")
  flags.DEFINE_integer(
      "max_position_embeddings", 8192, "config.json's context length (RoPE has no limit)."
  )


if __name__ == "__main__":
  from score_jax import cli

  _define_flags()
  cli.run(main)  # input errors: one line on stderr, exit 2 (traceback with --verbosity=1)

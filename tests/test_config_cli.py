"""Config validation of every field, and the CLIs' one-line input errors (exit status 2).

Nothing here loads a model: `config_lib.validate` is pure, and the CLI runs fail before
anything loads (a few seconds each, the interpreter and the imports; run concurrently).
"""

import glob
import os
import subprocess
import sys

import pytest

from score_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _set(c, field, value):
  """c.<field> = value, bypassing ConfigDict's type safety (to test wrong types too)."""
  *path, last = field.split(".")
  for p in path:
    c = c[p]
  with c.ignore_type():
    c[last] = value


def _config(**fields):
  c = config_lib.default_config()
  for k, v in fields.items():
    _set(c, k, v)
  return c


def _fields(c=None):
  return config_lib.leaf_fields(config_lib.default_config() if c is None else c)


def _is_number(v):
  return isinstance(v, (int, float)) and not isinstance(v, bool)


# -------------------------------------------------------------------- (a) every field, alone

# (field, a bad value). Every leaf field of default_config() needs at least one case
# (test_every_field_has_a_case): a new field fails there until it is validated and listed.
BAD_VALUES = [
    ("seed", -1),
    ("seed", 1.5),
    ("model.source", "s3"),
    ("model.path", None),
    ("model.family", "gpt2"),
    ("model.dtype", "int8"),
    ("model.param_dtype", "fp32"),
    ("model.tokenizer", None),
    ("model.chat_template", "chatml"),
    ("model.base.num_layers", 0),
    ("model.base.embed_dim", -8),
    ("model.base.num_heads", 0),
    ("model.base.num_kv_heads", 0),
    ("model.base.vocab_size", 0),
    ("model.base.noise", 1.5),
    ("model.base.habit", -0.1),
    ("model.base.habit_above", -1),
    ("model.base.dialogue", 0),
    ("model.base.preamble", 2.0),
    ("model.base.sft_steps", 0),
    ("model.base.sft_batch_size", 0),
    ("model.base.sft_learning_rate", 0.0),
    ("model.base.sft_seq_len", 0),
    ("model.base.seed", -1),
    ("task.name", "imagenet"),
    ("task.source", None),
    ("task.train_split", None),
    ("task.eval_split", None),
    ("task.eval_source", 3),
    ("task.data_dir", 3),
    ("task.num_eval", -1),
    ("task.embedded.family", "chess"),
    ("task.embedded.count", 1),
    ("task.embedded.max_value", 6),
    ("task.embedded.restate", "yes"),
    ("task.sandbox.timeout_s", 0.0),
    ("task.sandbox.timeout_s", -1.0),
    ("task.sandbox.memory_mb", 32),
    ("task.sandbox.workers", -1),
    ("task.sandbox.workers", 65),
    ("task.sandbox.allow_unconfined", 1),
    ("sampler.temperature", 0.0),
    ("sampler.temperature", float("nan")),
    ("sampler.top_k", -1),
    ("sampler.top_p", 1.5),
    ("sampler.top_p", 0.0),
    ("sampler.num_samples", 0),
    ("sampler.followups", 0),
    ("sampler.prompt_buckets", ()),
    ("sampler.prompt_buckets", (0, 512)),
    ("sampler.turn_budgets", (512, -1)),
    ("sampler.turn_budgets", (512, "a")),
    ("sampler.instruction_len", 0),
    ("loss.alpha", -1.0),
    ("loss.beta1", -0.1),
    ("loss.beta2", -1.0),
    ("loss.kl_estimator", "k2"),
    ("loss.baseline", "median"),
    ("loss.aggregation", "mean"),
    ("loss.turn2_state_baseline", "yes"),
    ("loss.anchor_turn1", None),
    ("optim.learning_rate", 0.0),
    ("optim.warmup_steps", -1),
    ("optim.b1", 1.0),
    ("optim.b2", -0.1),
    ("optim.grad_clip", -1.0),
    ("optim.weight_decay", -0.5),
    ("stages", ("stage3",)),
    ("stages", ()),
    ("stage_steps", (100, -1)),
    ("stage_steps", (100, 2.5)),
    ("batch_size", 0),
    ("micro_batch_size", -4),
    ("mesh.data", 0),
    ("mesh.fsdp", -2),
    ("mesh.tensor", 0),
    ("mesh.num_devices", -1),
    ("distributed", "maybe"),
    ("checkpoint_every", -1),
    ("keep_checkpoints", 0),
    ("async_checkpoints", "yes"),
    ("eval_every", -1),
    ("log_every", -1),
    ("report", None),
]


def test_every_field_has_a_case():
  fields = _fields()
  numeric = {f for f, v in fields.items() if _is_number(v)}
  covered = {f for f, _ in BAD_VALUES}
  assert numeric - covered == set(), "numeric fields without a bad-value case"
  assert set(fields) - covered == set(), "fields without a bad-value case"
  assert covered - set(fields) == set(), "cases of fields default_config() does not have"


def test_defaults_validate():
  config_lib.validate(config_lib.default_config())
  config_lib.validate(config_lib.default_config(), num_devices=1)


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_value_names_the_field(field, value, capsys):
  with pytest.raises(ValueError) as e:
    config_lib.validate(_config(**{field: value}))
  msg = str(e.value)
  assert isinstance(e.value, config_lib.ConfigError)
  assert msg.startswith(f"config.{field}="), msg
  assert "\n" not in msg
  # What the CLIs make of it (their `main` runs inside cli.wrap): one line, exit 2.
  from score_jax import cli

  main = cli.wrap(lambda argv: config_lib.validate(_config(**{field: value})))
  with pytest.raises(SystemExit) as exit_:
    main(["train"])
  err = capsys.readouterr().err
  assert exit_.value.code == 2 and err == f"error: {msg}\n", err


@pytest.mark.parametrize("field", sorted(_fields()))
def test_wrong_type_names_the_field(field):
  """A string where a number, bool or tuple is expected (and a number for a string)."""
  value = 3 if isinstance(_fields()[field], str) else "abc"
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{field}="):
    config_lib.validate(_config(**{field: value}))


# (ConfigDict itself turns a bool set on a float field into 1.0; an int field keeps it.)
@pytest.mark.parametrize(
    "field", sorted(f for f, v in _fields().items() if _is_number(v) and isinstance(v, int))
)
def test_bool_is_not_an_integer(field):
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{field}=True: must be"):
    config_lib.validate(_config(**{field: True}))


# Rules between fields: (overrides, the field named).
CROSS = [
    (dict(**{"model.source": "hf"}), "model.path"),
    (dict(**{"model.base.num_heads": 3}), "model.base.num_heads"),  # 128 % 3
    (dict(**{"model.base.embed_dim": 12, "model.base.num_heads": 4}), "model.base.embed_dim"),
    (dict(**{"model.base.num_kv_heads": 3}), "model.base.num_kv_heads"),
    (dict(**{"task.embedded.family": "sort", "model.base.habit": 0.5}), "model.base.habit"),
    (
        dict(
            **{
                "task.embedded.family": "sort",
                "task.embedded.count": 6,
                "task.embedded.max_value": 5,
            }
        ),
        "task.embedded.max_value",
    ),
    (dict(**{"task.name": "mbpp", "task.train_split": "dev"}), "task.train_split"),
    (dict(stages=("single_turn", "stage2")), "stages"),
    (dict(stage_steps=(1,)), "stage_steps"),
    (dict(stages=("single_turn",), stage_steps=(4,)), "loss.alpha"),
    (dict(**{"sampler.num_samples": 1}), "sampler.num_samples"),  # loo baseline
    (dict(**{"sampler.turn_budgets": (512,)}), "sampler.turn_budgets"),
    (
        dict(
            stages=("single_turn",), stage_steps=(4,), **{"loss.alpha": 0.0, "sampler.followups": 2}
        ),
        "sampler.followups",
    ),
    (dict(micro_batch_size=3), "micro_batch_size"),
    (dict(**{"mesh.data": -1, "mesh.fsdp": -1}), "mesh.fsdp"),
]


@pytest.mark.parametrize("overrides, field", CROSS, ids=[f for _, f in CROSS])
def test_rules_between_fields_name_a_field(overrides, field):
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{field}="):
    config_lib.validate(_config(**overrides))


@pytest.mark.parametrize(
    "overrides, devices, field",
    [
        (dict(batch_size=6), 8, "batch_size"),  # data=-1 -> 8-way data parallel
        (dict(batch_size=12, **{"mesh.data": 1, "mesh.fsdp": -1}), 8, "batch_size"),
        (dict(**{"mesh.data": 1}), 8, "mesh"),  # 1 x 1 x 1 on 8 devices
        (dict(**{"mesh.num_devices": 16}), 8, "mesh.num_devices"),
    ],
)
def test_device_checks(overrides, devices, field):
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{field}="):
    config_lib.validate(_config(**overrides), num_devices=devices)


def test_sandbox_defaults():
  assert config_lib.default_config().task.sandbox.to_dict() == dict(
      timeout_s=10.0, memory_mb=1024, workers=0, allow_unconfined=False
  )
  config_lib.validate(
      _config(
          **{
              "task.sandbox.workers": 64,
              "task.sandbox.memory_mb": 64,
              "task.sandbox.timeout_s": 0.5,
              "task.sandbox.allow_unconfined": True,
          }
      )
  )


def test_legal_values_mirror_their_consumers():
  """config_lib's enums are copies (validation imports nothing heavy): keep them equal."""
  import jax.numpy as jnp
  from score_jax import losses, prompts
  from score_jax.data import tasks as data_tasks
  from score_jax.model import config as model_config
  from score_jax.environments import embedded

  assert config_lib.STAGES == losses.STAGES
  assert config_lib.KL_ESTIMATORS == losses.KL_ESTIMATORS
  assert config_lib.BASELINES == losses.BASELINES
  assert config_lib.AGGREGATIONS == losses.AGGREGATIONS
  assert config_lib.MODEL_FAMILIES == model_config.FAMILIES
  assert config_lib.CHAT_TEMPLATES == prompts.FAMILIES
  assert config_lib.EMBEDDED_FAMILIES == tuple(embedded.FAMILIES)
  assert set(config_lib.MBPP_SPLITS) == set(data_tasks.MBPP_SPLITS)
  assert set(config_lib.DATASETS) == set(data_tasks.DATASETS) | {"embedded", "toy"}
  for name in config_lib.DTYPES:
    assert jnp.issubdtype(jnp.dtype(name), jnp.floating), name


# ----------------------------------------------------------------- (c) the shipped configs

# Every configs/*.py and every argument its docstring lists.
SHIPPED = [
    ("embedded", ""),
    ("embedded", "runlocal"),
    ("toy", ""),
    ("toy", "runlocal"),
    ("gemma_math", ""),
    ("gemma_math", "runlocal"),
    ("gemma_code", ""),
    ("gemma3_270m_eval", "gsm8k"),
    ("gemma3_270m_eval", "math500"),
    ("smollm2_arith", ""),
    ("smollm2_arith", "runlocal"),
]


def test_every_shipped_config_is_listed():
  names = {
      os.path.basename(p)[:-3]
      for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
      if not os.path.basename(p).startswith("_")
  }
  assert names == {n for n, _ in SHIPPED}


@pytest.mark.parametrize("name, arg", SHIPPED, ids=[f"{n}:{a}" for n, a in SHIPPED])
def test_shipped_config_validates(name, arg):
  import importlib

  c = importlib.import_module(f"configs.{name}").get_config(arg)
  if c.model.source in ("hf", "gguf") and not c.model.path:
    c.model.path = "/path/to/hf/gemma-2-2b"  # the user's, on the command line (docstring)
  config_lib.validate(c)
  config_lib.validate(c, num_devices=1)  # CPU
  if c.mesh.num_devices != 1 and "runlocal" not in arg:
    config_lib.validate(c, num_devices=8)  # a TPU slice
  with pytest.raises(ValueError, match="unknown argument"):
    importlib.import_module(f"configs.{name}").get_config("no-such-arg")


@pytest.mark.parametrize(
    "field, value", [("sampler.top_k", 50), ("sampler.top_p", 0.9), ("sampler.top_p", 0.999)]
)
def test_training_rejects_a_filtered_sampling_distribution(field, value):
  """On-policy: the loss scores unfiltered log-probs, so training samples unfiltered too;
  a config that only evaluates may filter (validate passes, validate_training does not)."""
  c = config_lib.default_config()
  config_lib.validate_training(c)  # the defaults train
  section, name = field.split(".")
  c[section][name] = value
  config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.{field}={value!r}: training"):
    config_lib.validate_training(c)


# ------------------------------------------------------------------- (b) the real CLIs

TRAIN = [sys.executable, "-m", "score_jax.train", "--config=configs/toy.py"]
EVAL = [sys.executable, "-m", "score_jax.evaluate", "--config=configs/toy.py"]

# (name, command after --workdir, the start of the one line after 'error: ', extra env)
CLI_CASES = [
    (
        "micro_batch_size",
        TRAIN,
        ["--config.micro_batch_size=-4"],
        "config.micro_batch_size=-4: must be non-negative",
        {},
    ),
    ("batch_size", TRAIN, ["--config.batch_size=0"], "config.batch_size=0:", {}),
    ("top_p", TRAIN, ["--config.sampler.top_p=1.5"], "config.sampler.top_p=1.5:", {}),
    (
        "top_k_in_training",
        TRAIN,
        ["--config.sampler.top_k=50"],
        "config.sampler.top_k=50: training samples from the full distribution",
        {},
    ),
    ("no_such_field", TRAIN, ["--config.sampler.nope=1"], "config.sampler.nope=", {}),
    ("wrong_type", TRAIN, ["--config.batch_size=abc"], "config.batch_size='abc':", {}),
    (
        "sandbox_timeout",
        TRAIN,
        ["--config.task.sandbox.timeout_s=0"],
        "config.task.sandbox.timeout_s=0.0:",
        {},
    ),
    (
        "missing_config_file",
        [sys.executable, "-m", "score_jax.train", "--config=configs/no_such.py"],
        [],
        "--config='configs/no_such.py'",
        {},
    ),
    ("evaluate", EVAL, ["--config.sampler.temperature=0"], "config.sampler.temperature=0.0:", {}),
]
DEBUG_CASES = [
    ("verbosity", TRAIN, ["--config.micro_batch_size=-4", "--verbosity=1"], {}),
    ("debug_env", TRAIN, ["--config.batch_size=abc"], {"SCORE_JAX_DEBUG": "1"}),
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
  """Every CLI case, run concurrently: {name: (CompletedProcess-like, workdir)}."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop("SCORE_JAX_DEBUG", None)
  procs = {}
  for name, cmd, extra, *rest in CLI_CASES + DEBUG_CASES:
    workdir = tmp_path_factory.mktemp(name) / "w"
    p = subprocess.Popen(
        [*cmd, f"--workdir={workdir}", *extra],
        cwd=REPO,
        env=dict(env, **rest[-1]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs[name] = (p, workdir)
  out = {}
  for name, (p, workdir) in procs.items():
    stdout, stderr = p.communicate(timeout=120)
    out[name] = (p.returncode, stdout, stderr, workdir)
  return out


@pytest.mark.parametrize("name, cmd, extra, expect, env", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_input_error_is_one_line(cli_runs, name, cmd, extra, expect, env):
  rc, stdout, stderr, workdir = cli_runs[name]
  lines = stderr.splitlines()
  assert rc == 2, stderr[-3000:]
  assert len(lines) == 1 and lines[0].strip(), stderr[-3000:]
  assert lines[0].startswith(f"error: {expect}"), lines[0]
  assert "Traceback" not in stderr + stdout
  assert not workdir.exists()  # failed before anything ran


@pytest.mark.parametrize("name", [c[0] for c in DEBUG_CASES])
def test_cli_debug_shows_the_traceback(cli_runs, name):
  rc, _, stderr, _ = cli_runs[name]
  assert rc == 2, stderr[-3000:]
  assert "Traceback (most recent call last)" in stderr
  assert "config.micro_batch_size=-4" in stderr or "config.batch_size=abc" in stderr


def test_input_errors_are_told_from_bugs(capsys):
  from absl import flags
  from score_jax import cli

  with pytest.raises(SystemExit) as e:
    cli.fail("config.x=1:\n  spread over\n  lines")
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: config.x=1: spread over lines\n"
  bad_flag = flags.IllegalFlagValueError("flag --num_problems=x: invalid literal for int()")
  assert cli.is_input_error(bad_flag)
  assert cli.describe(bad_flag) == "--num_problems='x': invalid literal for int()"
  assert (
      cli.describe(flags.IllegalFlagValueError("flag --config.seed=abc: invalid literal"))
      == "config.seed='abc': invalid literal"
  )
  assert cli.is_input_error(FileNotFoundError("config.task.source='/x': no such file"))
  assert cli.is_input_error(ValueError("--sc_samples=3: must be an even number >= 2"))
  assert cli.is_input_error(config_lib.ConfigError("anything"))
  assert not cli.is_input_error(TypeError("reshape new_sizes must all be positive"))
  assert not cli.is_input_error(ZeroDivisionError("config.x=1: division by zero"))

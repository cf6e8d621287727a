"""The command-line entry points' error handling: a bad input is one line on stderr, exit 2.

  if __name__ == "__main__":
    _define_flags()
    cli.run(main)  # instead of absl's app.run(main)

An *input error* is anything the user can fix on the command line or in the config:
  * flag parsing: a bad flag value (`--config.batch_size=abc`), an unknown flag, an override
    of a field the config does not have (`--config.nope=1`), a config file that does not
    load or whose `get_config(arg)` rejects its argument;
  * `config_lib.ConfigError` from `config_lib.validate` (`config.<field>=<value>: <why>`);
  * any ValueError / TypeError / OSError / LookupError whose message names the field or
    flag it is about (it starts with `config.<field>` or `--<flag>=`, the convention the
    package's checks follow, e.g. `config.task.source='x.jsonl': no such file or
    directory`), and `absl.app.UsageError`.
It is printed as `error: <message>` (one line) and the process exits with status 2, with no
traceback. Everything else (bugs) keeps Python's traceback (and exit status 1). With
`--verbosity=1` (absl's flag, or `-v 1`) or SCORE_JAX_DEBUG=1 an input error prints its full
traceback instead, still exiting 2 (under --pdb_post_mortem it is raised, for the debugger).

absl's own flag-parsing errors (`app.parse_flags_with_usage`) print a "FATAL Flags parsing
error" paragraph and exit 1; ml_collections' override errors for a missing field are not
`flags.Error` at all (a KeyError traceback), and a config file that fails to load only fails
later, on first access. `parse_flags` below replaces absl's parser for all of them.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from score_jax import config_lib

EXIT_INPUT_ERROR = 2
DEBUG_ENV = "SCORE_JAX_DEBUG"

# Messages that name the field or flag they are about.
_NAMED = re.compile(r"^(config\.[A-Za-z_][\w.]*|--[A-Za-z_][\w.-]*=)")
_OVERRIDE = re.compile(
    r"^--?(?:no)?(?P<flag>[A-Za-z_]\w*)\.(?P<path>[\w.]+)(?:=(?P<value>.*))?$", re.S
)


def _env_debug() -> bool:
  return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _argv_verbosity(argv: Sequence[str]) -> int:
  """The --verbosity / -v value on a command line that did not parse (0 if absent)."""
  level = 0
  args = list(argv[1:])
  for i, a in enumerate(args):
    if a == "--":
      break
    m = re.match(r"^--?(?:verbosity|v)(?:=(.*))?$", a)
    if not m:
      continue
    value = m.group(1) if m.group(1) is not None else (args[i + 1] if i + 1 < len(args) else "")
    try:
      level = int(value)
    except ValueError:
      pass
  return level


def debug_requested(argv: Sequence[str] | None = None) -> bool:
  """SCORE_JAX_DEBUG=1, or absl's verbosity >= 1 (parsed, or read off `argv`)."""
  if _env_debug():
    return True
  from absl import flags

  try:
    if flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].value >= 1:
      return True
  except (KeyError, AttributeError, flags.Error):
    pass
  return argv is not None and _argv_verbosity(argv) >= 1


LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def configure_logging() -> None:
  """The run's own INFO lines (score_jax.*) and every library's warnings; the libraries'
  INFO lines (orbax writes a dozen per checkpoint) only with `--verbosity=1` / `-v 1`
  (or SCORE_JAX_DEBUG=1)."""
  import logging

  from absl import logging as absl_logging

  verbose = debug_requested()
  logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
  logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
  logging.getLogger("score_jax").setLevel(logging.INFO)
  if not verbose:  # absl's logger (orbax logs through it) follows --verbosity otherwise
    absl_logging.set_verbosity(absl_logging.WARNING)


def fail(message: str) -> NoReturn:
  """Prints `error: <message>` as one line on stderr and exits with status 2."""
  line = " ".join(str(message).split()) or "invalid input"
  sys.stdout.flush()
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  raise SystemExit(EXIT_INPUT_ERROR)


def fail_verbose(e: BaseException) -> NoReturn:
  """The debug form of `fail`: the full traceback of `e`, then exit status 2 (or, under
  absl's --pdb_post_mortem, `e` itself so that the debugger opens)."""
  from absl import flags

  try:
    post_mortem = flags.FLAGS.is_parsed() and flags.FLAGS["pdb_post_mortem"].value
  except (KeyError, AttributeError, flags.Error):
    post_mortem = False
  if post_mortem:
    raise e
  sys.stdout.flush()
  traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
  sys.stderr.flush()
  raise SystemExit(EXIT_INPUT_ERROR)


def _message(e: BaseException) -> str:
  if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
    return e.args[0]  # str(KeyError) adds quotes
  return str(e)


def _last_line(text: str) -> str:
  lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
  return lines[-1] if lines else ""


def is_input_error(e: BaseException) -> bool:
  from absl import app, flags
  from score_jax.rewards.code_sandbox import SandboxUnavailable

  if isinstance(e, (config_lib.ConfigError, flags.Error, app.UsageError, SandboxUnavailable)):
    return True
  return isinstance(e, (ValueError, TypeError, OSError, LookupError)) and bool(
      _NAMED.match(_message(e).lstrip())
  )


def describe(e: BaseException) -> str:
  """The one-line form of an input error."""
  msg = _message(e).strip()
  m = re.match(r"^flag --(?P<name>[\w.-]+)=(?P<value>.*?): (?P<why>.*)$", msg, re.S)
  if m:  # absl's IllegalFlagValueError: 'flag --config.batch_size=abc: invalid literal...'
    name, value, why = m.group("name"), m.group("value"), m.group("why")
    if value == "None" and "must have a value other than None" in why:
      return f"--{name}: required flag is missing"
    if "Traceback (most recent call last)" in why:  # a config file's get_config() raised
      why = _last_line(why)
    field = name if "." in name else f"--{name}"
    return f"{field}={value!r}: {why}"
  return msg


def _flag_arg(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name=value` or `--name value` on the command line (the last one)."""
  value = None
  args = list(argv[1:])
  for i, a in enumerate(args):
    if a in (f"--{name}", f"-{name}") and i + 1 < len(args):
      value = args[i + 1]
    elif a.startswith((f"--{name}=", f"-{name}=")):
      value = a.split("=", 1)[1]
  return value


def _override_args(argv: Sequence[str], flag: str) -> list[tuple[str, str | None]]:
  out = []
  for a in argv[1:]:
    m = _OVERRIDE.match(a)
    if m and m.group("flag") == flag:
      out.append((m.group("path"), m.group("value")))
  return out


def _is_config_flag(flag) -> bool:
  try:  # not re-exported by ml_collections.config_flags
    from ml_collections.config_flags.config_flags import is_config_flag
  except ImportError:  # pragma: no cover - another ml_collections layout
    return hasattr(type(flag), "config_filename")
  return is_config_flag(flag)


def _config_flags(flag_values) -> list:
  flags_ = [flag_values[name] for name in list(flag_values)]
  return [
      f for i, f in enumerate(flags_) if _is_config_flag(f) and all(f is not g for g in flags_[:i])
  ]  # a flag may be listed under 2 names


def _describe_parse_error(e: BaseException, argv: Sequence[str]) -> str:
  """One line for an exception raised while absl parsed the command line."""
  from absl import flags

  if isinstance(e, flags.Error):
    return describe(e)
  if isinstance(e, (KeyError, AttributeError, IndexError)):
    # ml_collections' config_path: an override of a field the config does not have
    # (a KeyError "'nope'", maybe with a did-you-mean hint; ConfigDict wraps it in an
    # AttributeError).
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
      inner = inner.args[0]
    text = _message(inner).strip()
    missing = re.findall(r"'([^']+)'", text.splitlines()[0] if text else "")
    hint = next((ln.strip() for ln in text.splitlines() if "Did you mean" in ln), "")
    for flag in _config_flags(flags.FLAGS):
      for path, value in _override_args(argv, flag.name):
        if not missing or any(k in path.split(".") for k in missing):
          shown = f"{flag.name}.{path}" + (f"={value!r}" if value is not None else "")
          return f"{shown}: no such field in --{flag.name}" + (f" ({hint})" if hint else "")
  if isinstance(e, OSError):  # overrides of a config file that did not load
    why = _last_line(_message(e)) or type(e).__name__
    for flag in _config_flags(flags.FLAGS):
      path = _flag_arg(argv, flag.name)
      if path is not None:
        return f"--{flag.name}={path!r}: cannot load the config file: {why}"
    return f"cannot load the config file: {why}"
  return f"{type(e).__name__}: {_message(e)}"


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's `flags_parser`: parses `argv`; any input error exits 2 with one line."""
  from absl import flags

  try:
    rest = flags.FLAGS(argv)
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if debug_requested(argv):
      fail_verbose(e)
    fail(_describe_parse_error(e, argv))
  # A config file that did not load (missing, or its module raised an OSError) only fails
  # on first access (ml_collections' _ErrorConfig): report it now, naming the flag.
  for flag in _config_flags(flags.FLAGS):
    value = flag.value
    if type(value).__name__ == "_ErrorConfig":
      err = object.__getattribute__(value, "_error")
      if debug_requested(argv):
        fail_verbose(err)
      path = _flag_arg(argv, flag.name) or ""
      fail(f"--{flag.name}={path!r}: cannot load the config file: {_last_line(str(err))}")
  return rest


def wrap(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
  """`main` with input errors (see `is_input_error`) turned into one line and exit 2."""

  def wrapped(argv):
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if not is_input_error(e):
        raise  # a bug, not bad input: Python's traceback
      if debug_requested():
        fail_verbose(e)
      fail(describe(e))

  wrapped.__name__ = getattr(main, "__name__", "main")
  wrapped.__doc__ = getattr(main, "__doc__", None)
  return wrapped


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
  """`absl.app.run(main)` with one-line input errors and exit status 2."""
  from absl import app

  app.run(wrap(main), argv=None if argv is None else list(argv), flags_parser=parse_flags)

#!/usr/bin/env python3
r"""Run score_jax training on a Cloud TPU VM: one host or a multi-host slice.

Each subcommand turns into `gcloud compute tpus ...` commands. Every command is printed
(shell-quoted, ready to paste) before it runs; `--dry_run` prints them all and runs none.
Flags are checked before any gcloud call, and an error names the flag that is wrong.

A full session (v5e, 8 chips, one host):

  L="python launch/tpu_vm.py"; T="--name=score-v5e --zone=us-west4-a"
  $L create $T --accelerator_type=v5litepod-8 --spot           # or --reserved; default on-demand
  $L copy   $T                        # scp score_jax/ configs/ setup.py to ~/score on every worker
  $L setup  $T                        # pip install -U "jax[tpu]"; pip install -e ~/score
  $L run    $T --accelerator_type=v5litepod-8 --config=configs/gemma_math.py \
      --workdir=gs://BUCKET/score_math --config.model.path=/path/to/gemma-2-2b
  $L tail   $T --follow               # worker 0's ~/score_logs/score.log
  $L stop   $T                        # ends the training session on every worker
  $L delete $T                        # deletes the TPU VM (gcloud asks; --yes skips that)

  --queued (on create/status/delete) goes through a queued resource instead
  (`gcloud compute tpus queued-resources create --node-id=NAME ...`): the request waits for
  capacity instead of failing; `status --queued` shows its state. `copy --git_url=URL`
  clones a repository on every worker instead of copying the local tree.

Multi-host slices (e.g. v5litepod-16, v5p-16, v6e-32, v4-16): `copy`, `setup`, `run` and
`stop` act on every worker (`--worker=all`), and every worker runs the *same* training
command. `score_jax.train` calls `score_jax.sharding.maybe_initialize_distributed`, which runs
`jax.distributed.initialize()` (coordinator, process count and ids are auto-detected on
TPU VMs); the mesh then spans all chips of the slice. Process 0 writes metrics, TensorBoard
and the report; all processes write the (orbax) checkpoints into the *shared* workdir, so
a multi-host run needs a gs:// workdir (`run --accelerator_type=<multi-host type>` refuses
a local one). Files the config reads (model.path, task.source) must exist on every worker:
`copy --paths=score_jax,configs,setup.py,data` puts them under ~/score.

Preemption (spot VMs, queued spot requests): a preempted TPU VM must be deleted and
created again; then `copy`, `setup` and the same `run` command. The trainer resumes from the
newest checkpoint in <workdir>/checkpoints (every `config.checkpoint_every` steps), so at
most that many steps are lost. That only works when the workdir outlives the VM: use gs://.

`run` starts the trainer in a detached tmux session (`--session_type=nohup` uses
`setsid nohup` instead) that survives ssh disconnects; its output goes to
~/score_logs/<session>.log on each worker. `run` refuses to start a second session of the
same name on a worker where one is still alive (`stop` first).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_COPY_PATHS = ("score_jax", "configs", "setup.py")
LOG_DIR = "score_logs"  # under $HOME on each worker


class LaunchError(Exception):
  """A bad flag value; the message names the flag."""


# --------------------------------------------------------------------------------------------
# TPU types
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generation:
  name: str  # the prefix gcloud expects in --accelerator-type
  aliases: tuple[str, ...]
  sizes: tuple[int, ...]  # valid suffixes N of <name>-N
  cores_per_chip: int  # the suffix counts TensorCores (v4, v5p: 2 per chip) or chips (v5e, v6e)
  max_single_host_chips: int  # larger slices span several hosts (VMs)
  runtime_version: str  # default --runtime_version for JAX
  hbm_gib: int  # per chip


# Sources: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} (slice shapes, hosts) and
# cloud.google.com/tpu/docs/runtimes (runtime versions for JAX).
GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation(
            "v4",
            (),
            (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            2,
            4,
            "tpu-ubuntu2204-base",
            32,
        ),
        Generation(
            "v5litepod", ("v5e",), (1, 4, 8, 16, 32, 64, 128, 256), 1, 8, "v2-alpha-tpuv5-lite", 16
        ),
        Generation(
            "v5p",
            (),
            (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 12288),
            2,
            4,
            "v2-alpha-tpuv5",
            95,
        ),
        Generation("v6e", (), (1, 4, 8, 16, 32, 64, 128, 256), 1, 8, "v2-alpha-tpuv6e", 32),
    )
}


@dataclasses.dataclass(frozen=True)
class Accelerator:
  type: str  # as gcloud wants it, e.g. v5litepod-8
  generation: Generation
  chips: int

  @property
  def multi_host(self) -> bool:
    return self.chips > self.generation.max_single_host_chips


def known_types() -> str:
  return "; ".join(
      f"{g.name}-{{{','.join(map(str, g.sizes))}}}"
      + (f" (alias {'/'.join(g.aliases)})" if g.aliases else "")
      for g in GENERATIONS.values()
  )


def parse_accelerator(value: str | None, flag: str = "--accelerator_type") -> Accelerator:
  if not value:
    raise LaunchError(f"{flag} is required, e.g. {flag}=v5litepod-8 (known: {known_types()})")
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", value.strip().lower())
  gen = None
  if m:
    prefix = m.group(1)
    gen = next((g for g in GENERATIONS.values() if prefix == g.name or prefix in g.aliases), None)
  if gen is None:
    raise LaunchError(f"{flag}={value!r}: unknown TPU type; known: {known_types()}")
  size = int(m.group(2))
  if size not in gen.sizes:
    raise LaunchError(
        f"{flag}={value!r}: {gen.name} comes in sizes {list(gen.sizes)} "
        f"(the number counts {'TensorCores' if gen.cores_per_chip > 1 else 'chips'})"
    )
  return Accelerator(f"{gen.name}-{size}", gen, size // gen.cores_per_chip)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_ZONE_RE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
_SAFE_RE = re.compile(r"[A-Za-z0-9_.-]+")  # pasted unquoted into remote shell scripts
_OVERRIDE_RE = re.compile(r"--config\.[A-Za-z_][A-Za-z0-9_.]*=.*", re.S)
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.S)


def _warn(msg: str):
  print(f"warning: {msg}", file=sys.stderr)


def validate_common(args):
  if not args.name:
    raise LaunchError("--name is required: the TPU VM (node) name, e.g. --name=score-v5e")
  if not _NAME_RE.fullmatch(args.name):
    raise LaunchError(
        f"--name={args.name!r}: TPU names are 1-63 lowercase letters, digits "
        "and hyphens, starting with a letter and not ending with a hyphen"
    )
  if not args.zone:
    raise LaunchError(
        "--zone is required, e.g. --zone=us-central2-b (v4), us-west4-a (v5e), "
        "us-east5-a (v5p, v6e); see `gcloud compute tpus locations list`"
    )
  if not _ZONE_RE.fullmatch(args.zone):
    raise LaunchError(f"--zone={args.zone!r} does not look like a zone, e.g. us-central2-b")
  qr = getattr(args, "qr_id", None)
  if qr is not None and not _NAME_RE.fullmatch(qr):
    raise LaunchError(
        f"--qr_id={qr!r}: lowercase letters, digits and hyphens, starting with " "a letter"
    )
  for flag in ("session", "remote_dir"):
    v = getattr(args, flag, None)
    if v is not None and (not _SAFE_RE.fullmatch(v) or v in (".", "..")):
      raise LaunchError(f"--{flag}={v!r}: use only letters, digits, '.', '_' and '-'")


def validate_workdir(workdir: str | None, accel: Accelerator | None):
  if not workdir:
    raise LaunchError(
        "--workdir is required, e.g. --workdir=gs://BUCKET/score_run (checkpoints, "
        "metrics and the report go there; re-running resumes from it)"
    )
  if workdir.startswith("gs://"):
    if not re.fullmatch(r"gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?", workdir):
      raise LaunchError(f"--workdir={workdir!r}: not a gs://BUCKET/path URL")
    return
  if accel is not None and accel.multi_host:
    raise LaunchError(
        f"--workdir={workdir!r}: {accel.type} spans several hosts, which must share one "
        "workdir: use a gs:// path (e.g. --workdir=gs://BUCKET/score_run)"
    )
  _warn(
      f"--workdir={workdir!r} is not gs://: checkpoints on the VM's disk are lost when it is "
      "preempted or deleted"
      + (
          ""
          if accel
          else ", and a multi-host slice needs a shared gs:// workdir "
          "(pass --accelerator_type to check)"
      )
  )


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _loc(args) -> list[str]:
  return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _ssh(args, script: str, worker: str = "all") -> list[str]:
  return [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "ssh",
      args.name,
      *_loc(args),
      f"--worker={worker}",
      f"--command={script}",
  ]


def _provisioning(args) -> list[str]:
  if args.spot and args.reserved:
    raise LaunchError(
        "--spot and --reserved are mutually exclusive (spot capacity vs. your "
        "reservation); pass neither for on-demand"
    )
  return ["--spot"] if args.spot else ["--reserved"] if args.reserved else []


def cmd_create(args) -> list[list[str]]:
  accel = parse_accelerator(args.accelerator_type)
  prov = _provisioning(args)
  runtime = args.runtime_version or accel.generation.runtime_version
  if args.queued:
    qr = args.qr_id or args.name
    extra = [f"--valid-until-duration={args.valid_until}"] if args.valid_until else []
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            qr,
            f"--node-id={args.name}",
            *_loc(args),
            f"--accelerator-type={accel.type}",
            f"--runtime-version={runtime}",
            *prov,
            *extra,
        ]
    ]
  if args.valid_until:
    raise LaunchError("--valid_until applies to queued resources only (add --queued)")
  return [
      [
          "gcloud",
          "compute",
          "tpus",
          "tpu-vm",
          "create",
          args.name,
          *_loc(args),
          f"--accelerator-type={accel.type}",
          f"--version={runtime}",
          *prov,
      ]
  ]


def cmd_copy(args) -> list[list[str]]:
  d = args.remote_dir
  if args.git_url:
    url, ref = shlex.quote(args.git_url), shlex.quote(args.git_ref)
    script = (
        f"set -e; if [ ! -d ~/{d}/.git ]; then git clone {url} ~/{d}; fi; "
        f"cd ~/{d} && git fetch --tags origin && git checkout --force {ref} && "
        "git log -1 --oneline"
    )
    return [_ssh(args, script)]
  paths = [p for p in (args.paths.split(",") if args.paths else DEFAULT_COPY_PATHS) if p]
  local = []
  for p in paths:
    full = p if os.path.isabs(p) else os.path.join(REPO_ROOT, p)
    if not os.path.exists(full):
      raise LaunchError(
          f"--paths: {p!r} does not exist (relative paths are relative to " f"{REPO_ROOT})"
      )
    local.append(os.path.normpath(full))
  return [
      _ssh(args, f"mkdir -p ~/{d}"),
      [
          "gcloud",
          "compute",
          "tpus",
          "tpu-vm",
          "scp",
          "--recurse",
          *local,
          f"{args.name}:{d}/",
          *_loc(args),
          "--worker=all",
      ],
  ]


def cmd_setup(args) -> list[list[str]]:
  py = shlex.quote(args.python)
  script = (
      f"set -e; {py} -m pip install -U {shlex.quote(args.jax_spec)}; "
      f"cd ~/{args.remote_dir} && {py} -m pip install -e .; "
      # tcmalloc: XLA's per-step scratch is returned to and re-faulted from the kernel by
      # glibc's malloc (benchmarks/main_job.py); optional, `run` preloads it when present.
      "(sudo apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 || "
      'echo "$(hostname): libtcmalloc-minimal4 not installed; glibc malloc it is"); '
      f"{py} -c 'import jax; print(jax.process_index(), jax.local_device_count(), "
      "jax.devices()[0].device_kind)'"
  )
  return [_ssh(args, script)]


def train_command(args, overrides: Sequence[str]) -> list[str]:
  return [
      args.python,
      "-m",
      "score_jax.train",
      f"--config={args.config}",
      f"--workdir={args.workdir}",
      *overrides,
  ]


def cmd_run(args, overrides: Sequence[str]) -> list[list[str]]:
  if not args.config:
    raise LaunchError(
        "--config is required, e.g. --config=configs/gemma_math.py "
        "(a path inside the copied repository, optionally with :arg)"
    )
  accel = parse_accelerator(args.accelerator_type) if args.accelerator_type else None
  validate_workdir(args.workdir, accel)
  for o in overrides:
    if not _OVERRIDE_RE.fullmatch(o):
      raise LaunchError(
          f"unrecognised argument {o!r}: `run` passes on only config overrides "
          "of the form --config.field=value"
      )
  cfg_file = args.config.split(":", 1)[0]
  if not os.path.exists(os.path.join(REPO_ROOT, cfg_file)):
    _warn(
        f"--config={args.config!r}: {cfg_file} is not in this checkout; make sure the "
        "repository on the workers has it"
    )
  env = []
  for e in args.env or ():
    if not _ENV_RE.fullmatch(e):
      raise LaunchError(f"--env={e!r}: expected NAME=VALUE")
    env.append(e)
  s, d = args.session, args.remote_dir
  log = f"~/{LOG_DIR}/{s}.log"
  train = shlex.join((["env", *env] if env else []) + train_command(args, overrides))
  preload = (  # tcmalloc where `setup` installed it (--allocator=glibc: the system's malloc)
      "TC=$(ls /usr/lib/*/libtcmalloc_minimal.so.4 2>/dev/null | head -n 1); "
      'if [ -n "$TC" ]; then export LD_PRELOAD="$TC${LD_PRELOAD:+:$LD_PRELOAD}"; fi; '
      if args.allocator == "tcmalloc"
      else ""
  )
  inner = f"cd ~/{d} && {preload}exec {train} >> {log} 2>&1"
  header = f'echo "=== $(date -u +%FT%TZ) $(hostname): {s} starting ===" >> {log}'
  if args.session_type == "tmux":
    guard = (
        f'if tmux has-session -t {s} 2>/dev/null; then echo "$(hostname): tmux session '
        f'{s} is still running; stop it first" >&2; exit 1; fi'
    )
    launch = f"tmux new-session -d -s {s} {shlex.quote(inner)}"
  else:
    pid = f"~/{LOG_DIR}/{s}.pid"
    guard = (
        f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then echo '
        f'"$(hostname): {s} is still running (pid $(cat {pid})); stop it first" >&2; '
        "exit 1; fi"
    )
    launch = (
        f"setsid nohup bash -c {shlex.quote(inner)} > /dev/null 2>&1 < /dev/null & "
        f"echo $! > {pid}"
    )
  script = (
      f"mkdir -p ~/{LOG_DIR} && {guard}; {header}; {launch}; "
      f'echo "$(hostname): started {s}; log: {log}"'
  )
  return [_ssh(args, script)]


def cmd_tail(args) -> list[list[str]]:
  if not re.fullmatch(r"\d+|all", str(args.worker)):
    raise LaunchError(f"--worker={args.worker!r}: a worker index (0, 1, ...) or 'all'")
  if args.lines < 0:
    raise LaunchError(f"--lines={args.lines}: must be >= 0")
  follow = " -F" if args.follow else ""
  return [
      _ssh(
          args,
          f"tail -n {args.lines}{follow} ~/{LOG_DIR}/{args.session}.log",
          worker=str(args.worker),
      )
  ]


def cmd_stop(args) -> list[list[str]]:
  s, pid = args.session, f"~/{LOG_DIR}/{args.session}.pid"
  script = (
      f'tmux kill-session -t {s} 2>/dev/null && echo "$(hostname): stopped tmux '
      f'session {s}"; if [ -f {pid} ]; then kill -- -"$(cat {pid})" 2>/dev/null && '
      f'echo "$(hostname): stopped {s}"; rm -f {pid}; fi; true'
  )
  return [_ssh(args, script)]


def cmd_status(args) -> list[list[str]]:
  if args.queued:
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "describe",
            args.qr_id or args.name,
            *_loc(args),
        ]
    ]
  return [["gcloud", "compute", "tpus", "tpu-vm", "describe", args.name, *_loc(args)]]


def cmd_delete(args) -> list[list[str]]:
  quiet = ["--quiet"] if args.yes else []
  if args.queued:  # --force also deletes the TPU VM the queued resource created
    return [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            args.qr_id or args.name,
            *_loc(args),
            "--force",
            *quiet,
        ]
    ]
  return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_loc(args), *quiet]]


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def execute(argv: Sequence[str], dry_run: bool) -> int:
  """The one place commands go through: print shell-quoted, then run unless dry_run."""
  print(shlex.join(argv), flush=True)
  if dry_run:
    return 0
  return subprocess.run(list(argv), check=False).returncode


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  g = common.add_argument_group("common")
  g.add_argument("--name", help="TPU VM (node) name, e.g. score-v5e")
  g.add_argument("--zone", help="e.g. us-central2-b")
  g.add_argument("--project", help="GCP project (default: gcloud's configured project)")
  g.add_argument(
      "--dry_run",
      action="store_true",
      help="print every gcloud command, shell-quoted, and run none",
  )
  remote = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  remote.add_argument(
      "--remote_dir", default="score", help="repository directory under $HOME on each worker"
  )
  session = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  session.add_argument(
      "--session", default="score", help="session name; its log is ~/score_logs/<session>.log"
  )
  queued = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  queued.add_argument(
      "--queued",
      action="store_true",
      help="use a queued resource (gcloud compute tpus queued-resources)",
  )
  queued.add_argument("--qr_id", help="queued resource id (default: --name)")
  python = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  python.add_argument(
      "--python",
      default="python3",
      help="python on the workers (TPU VM images have python3, not python)",
  )

  p = argparse.ArgumentParser(
      prog="tpu_vm.py",
      allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description=__doc__.split("\n\n")[0],
      epilog=__doc__.split("\n\n", 1)[1],
  )
  sub = p.add_subparsers(dest="command", metavar="COMMAND")

  def add(name, parents, help_):
    return sub.add_parser(name, parents=[common, *parents], help=help_, allow_abbrev=False)

  c = add("create", [queued], "create the TPU VM (or a queued resource with --queued)")
  c.add_argument("--accelerator_type", help=f"TPU type; known: {known_types()}")
  c.add_argument(
      "--runtime_version",
      help="TPU software version (default per generation: "
      + ", ".join(f"{g.name}: {g.runtime_version}" for g in GENERATIONS.values())
      + ")",
  )
  c.add_argument("--spot", action="store_true", help="spot capacity (cheap, preemptible)")
  c.add_argument("--reserved", action="store_true", help="use the project's reservation")
  c.add_argument("--valid_until", help="--queued: give up after this duration, e.g. 6h")

  c = add("copy", [remote], "copy the code to every worker (scp, or git clone with --git_url)")
  c.add_argument("--git_url", help="clone this repository on every worker instead of scp")
  c.add_argument(
      "--git_ref",
      default="origin/HEAD",
      help="with --git_url: commit, tag or origin/<branch> to check out",
  )
  c.add_argument(
      "--paths",
      help="comma-separated local paths to scp (default: " + ",".join(DEFAULT_COPY_PATHS) + ")",
  )

  c = add("setup", [remote, python], 'pip install -U "jax[tpu]" and the package on every worker')
  c.add_argument(
      "--jax_spec", default="jax[tpu]", help="pip requirement for JAX, e.g. " "'jax[tpu]==0.7.2'"
  )

  c = add(
      "run",
      [remote, session, python],
      "start training on every worker in a detached session (extra --config.x=y pass on)",
  )
  c.add_argument("--config", help="config file in the repository, e.g. configs/gemma_math.py")
  c.add_argument("--workdir", help="gs://BUCKET/path shared by all workers")
  c.add_argument("--accelerator_type", help="the slice's type; enables the multi-host checks")
  c.add_argument(
      "--session_type",
      choices=("tmux", "nohup"),
      default="tmux",
      help="tmux new-session -d, or setsid nohup ... &",
  )
  c.add_argument(
      "--env",
      action="append",
      metavar="NAME=VALUE",
      help="environment variable for the trainer (repeatable)",
  )
  c.add_argument(
      "--allocator",
      choices=("tcmalloc", "glibc"),
      default="tcmalloc",
      help="preload tcmalloc when the worker has it (setup installs it), or glibc's malloc",
  )

  c = add("tail", [session], "show the training log of one worker")
  c.add_argument("--worker", default="0", help="worker index, or 'all'")
  c.add_argument("--lines", type=int, default=100)
  c.add_argument("--follow", action="store_true", help="keep following (tail -F)")

  add("stop", [session], "stop the training session on every worker")
  add("status", [queued], "describe the TPU VM (or the queued resource with --queued)")
  c = add("delete", [queued], "delete the TPU VM (or the queued resource and its VM)")
  c.add_argument("--yes", action="store_true", help="don't ask for confirmation (gcloud --quiet)")
  return p


COMMANDS = {
    "create": cmd_create,
    "copy": cmd_copy,
    "setup": cmd_setup,
    "run": cmd_run,
    "tail": cmd_tail,
    "stop": cmd_stop,
    "status": cmd_status,
    "delete": cmd_delete,
}


def build(argv: Sequence[str]) -> tuple[argparse.Namespace, list[list[str]]]:
  """Parses and validates argv; returns the commands to run. Raises LaunchError."""
  parser = _parser()
  args, extra = parser.parse_known_args(list(argv))
  if not args.command:
    raise LaunchError(f"a command is required: one of {', '.join(COMMANDS)}")
  validate_common(args)
  if args.command == "run":
    return args, cmd_run(args, extra)
  if extra:
    raise LaunchError(f"unrecognised arguments for {args.command!r}: {' '.join(extra)}")
  return args, COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    args, commands = build(argv)
    if not args.dry_run and shutil.which("gcloud") is None:
      raise LaunchError("gcloud is not on PATH: install the Google Cloud CLI, or use --dry_run")
  except LaunchError as e:
    print(f"tpu_vm.py: error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    print(f"# --dry_run: {len(commands)} command(s), none executed", file=sys.stderr)
  for cmd in commands:
    rc = execute(cmd, args.dry_run)
    if rc:
      print(
          f"tpu_vm.py: error: command failed with exit status {rc}: {shlex.join(cmd)}",
          file=sys.stderr,
      )
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())

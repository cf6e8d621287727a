"""Run untrusted, model-written Python programs against their tests in a sandbox.

The verdict is not the exit status.  Inside the sandbox, `harness` (its docstring says what
is guaranteed and what is not) runs the program and the tests in two processes: the tests
call the program over a socket and only plain data comes back.  The test process writes a
report (passed / total test cases, why) holding a per-run secret that the program process
never had; a run earns reward 1 only with that report, the secret intact, every test case
passed, within the limits.  Exiting early, killing, monkeypatching or forging therefore
gives 0, and the per-case counts are available beside the reward (`Execution`).

The sandbox: bubblewrap (``bwrap``, Debian package ``bubblewrap``), required by default
  * fresh IPC/PID/network/UTS/cgroup namespaces (and a user namespace when we are not
    root): no network at all (only the namespace's own loopback), the run sees and can
    signal only its own processes, and everything in the PID namespace dies with the run
    (``--die-with-parent``; on timeout the namespace's init is killed);
  * a new mount tree holding only read-only binds of ``/usr`` (with the ``/bin``/``/lib*``
    links), ``ld.so.cache``/``localtime`` and the Python installation, a private ``/proc``,
    a minimal ``/dev`` and a size-capped tmpfs ``/tmp`` as the only writable place (the
    cwd): host files, the repo, the host ``/tmp`` and ``$HOME`` are invisible;
  * ``--new-session`` (no terminal injection), cleared environment.
  As root, bwrap runs privileged (no user namespace) and drops every capability but
  CAP_SETUID/CAP_SETGID; the harness uses those to run the tests and the program as two
  per-slot unprivileged uids, so RLIMIT_NPROC (which root ignores) bounds fork bombs and
  the program can signal neither bwrap nor the tests.  As non-root, bwrap needs
  unprivileged user namespaces; both processes then share one uid and the test process is
  protected by being non-dumpable.
Each process sets rlimits before anything else runs: CPU seconds, address space, file size
(which also caps the captured stdout/stderr, written to files), processes, open files, no
core dumps.  The parent enforces the wall-clock limit.

Without a working bwrap the sandbox refuses to run (`SandboxUnavailable`, naming the package
and what is wrong), unless ``allow_unconfined=True``: then the same harness runs in a plain
subprocess (cleared environment, fresh temp dir, rlimits, and private network/PID
namespaces through ``unshare --user --map-current-user`` where that works), with no
filesystem isolation; a warning lists what is missing.  The unconfined mode never runs as
root.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hmac
import logging
import marshal
import math
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from score_jax.rewards import harness
from score_jax.rewards.types import (
    CORRECT,
    CRASH,
    MEMORY,
    OUTPUT_LIMIT,
    REASONS,
    SANDBOX_ERROR,
    SYNTAX_ERROR,
    TIMEOUT,
    WRONG_ANSWER,
    RewardResult,
)

__all__ = [
    "SandboxConfig",
    "SandboxUnavailable",
    "Execution",
    "CodeSandbox",
    "run_tests",
    "classify_execution",
    "bwrap_usable",
]

log = logging.getLogger(__name__)

# Exit status of the harness when it could not set the sandbox up (harness._EXIT_SETUP).
_WRAPPER_ERROR = 121
# Sandbox uids (root only): base + (our pid mod 100000) * 128 + 2 * slot (+1 for the
# program), so that concurrent sandboxes (also in other processes) never share a uid.
_UID_BASE = 1_000_000
_MAX_WORKERS = 64
_HARNESS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")
_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: "
    "dnf install bubblewrap)"
)


# The harness starts as this one-liner, which runs the harness's code object from a file
# descriptor (marshalled here once: compiling the source at every start would cost ~10 ms).
_BOOT = (
    "import marshal,os,sys;_fd=int(sys.argv.pop(1));" "exec(marshal.loads(os.pread(_fd,1<<24,0)))"
)


@functools.lru_cache(maxsize=None)
def _harness_code_fd() -> int:
  """A read-only file descriptor holding the marshalled harness (kept open)."""
  with open(_HARNESS_PATH, encoding="utf-8") as f:
    code = compile(f.read(), "harness.py", "exec")
  tmp = tempfile.TemporaryFile()
  tmp.write(marshal.dumps(code))
  tmp.flush()
  _KEEP.append(tmp)
  return tmp.fileno()


_KEEP: list = []


@functools.lru_cache(maxsize=4096)
def _job(tests: str, expose: tuple[str, ...]) -> str | None:
  """The harness's job for these tests (cases marked); None if they do not parse.  Cached:
  RL scores many samples of one problem."""
  try:
    return harness.mark_cases(tests, expose)
  except (SyntaxError, ValueError):
    return None


class SandboxUnavailable(RuntimeError):
  """No sandbox strong enough for model-written code can run here."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """Limits for one program run.

  timeout_s:     wall-clock limit (the parent kills the run).
  cpu_s:         RLIMIT_CPU; None = ceil(timeout_s).
  memory_mb:     RLIMIT_AS per process (address space; Python itself needs ~30 MB).
  output_limit_bytes: cap on captured stdout and on stderr (each); enforced as
                 RLIMIT_FSIZE, so it also caps any file the program writes.
  tmpfs_mb:      size of the writable /tmp (bwrap only).
  max_processes: RLIMIT_NPROC for the program's uid (threads count too).
  max_open_files: RLIMIT_NOFILE.
  workers:       programs run in parallel.
  allow_unconfined: without a working bubblewrap, run in a plain subprocess (no
                 filesystem isolation; never as root) instead of raising.
  import_site:   let programs import site-packages (slower startup: ~25 ms).
  """

  timeout_s: float = 10.0
  cpu_s: int | None = None
  memory_mb: int = 1024
  output_limit_bytes: int = 1 << 20
  tmpfs_mb: int = 64
  max_processes: int = 64
  max_open_files: int = 64
  workers: int = max(1, min(_MAX_WORKERS, os.cpu_count() or 1))
  allow_unconfined: bool = False
  import_site: bool = False

  def __post_init__(self):
    for name in (
        "timeout_s",
        "memory_mb",
        "output_limit_bytes",
        "tmpfs_mb",
        "max_processes",
        "max_open_files",
    ):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"SandboxConfig.{name}={v!r}: must be a positive number")
    if self.cpu_s is not None and (not isinstance(self.cpu_s, int) or self.cpu_s < 1):
      raise ValueError(f"SandboxConfig.cpu_s={self.cpu_s!r}: must be None or >= 1")
    if not isinstance(self.workers, int) or not 1 <= self.workers <= _MAX_WORKERS:
      raise ValueError(
          f"SandboxConfig.workers={self.workers!r}: must be in " f"[1, {_MAX_WORKERS}]"
      )


@dataclasses.dataclass(frozen=True)
class Execution:
  """What one sandboxed run did (outputs truncated to the cap).

  tests_passed / tests_total: test cases (top-level asserts) that passed, out of all;
  None when the harness wrote no report.  detail: the harness's word on the first failure.
  """

  reason: str
  exit_code: int | None  # None when killed by the parent or never started
  signal: int | None  # the fatal signal, if the harness died of one
  timed_out: bool
  stdout: str
  stderr: str
  duration_s: float
  tests_passed: int | None = None
  tests_total: int | None = None
  detail: str = ""

  @property
  def passed(self) -> bool:
    return self.reason == CORRECT


def _last_line(text: str) -> str:
  lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
  return lines[-1] if lines else ""


def classify_execution(
    *,
    started: bool,
    timed_out: bool,
    exit_code: int | None,
    signal_num: int | None,
    stdout_bytes: int,
    stderr_bytes: int,
    output_limit: int,
    stderr: str,
) -> str:
  """Map how a run without a valid harness report ended to a reason (pure).

  Used only for the reason: such a run never earns a reward.  Order matters: a run that
  filled its output cap is `output_limit` even if it then timed out; one whose stderr ends in
  a MemoryError is `memory` even if the clock ran out while it was dying (a loaded machine);
  an AssertionError is a failed test (`wrong_answer`); any other uncaught exception or fatal
  signal is a `crash`.
  """
  if not started:
    return SANDBOX_ERROR
  if stdout_bytes >= output_limit or stderr_bytes >= output_limit:
    return OUTPUT_LIMIT
  last = _last_line(stderr)
  tail = stderr[-2000:]
  if last.startswith("MemoryError") or "Cannot allocate memory" in tail or "bad_alloc" in tail:
    return MEMORY  # also when the clock ran out while the traceback was being written
  if timed_out or signal_num == signal.SIGXCPU:
    return TIMEOUT
  if signal_num == signal.SIGXFSZ:
    return OUTPUT_LIMIT
  if exit_code == 0 and signal_num is None:
    return CORRECT
  if exit_code == _WRAPPER_ERROR and last.startswith("sandbox-wrapper:"):
    return SANDBOX_ERROR
  if last.startswith(("SyntaxError", "IndentationError", "TabError")):
    return SYNTAX_ERROR
  if last.startswith("AssertionError"):
    return WRONG_ANSWER
  return CRASH


# --- Environment probes (cached per process) ---------------------------------------
def _python_executable() -> str:
  return os.path.realpath(sys.executable)


def _python_roots(import_site: bool) -> list[str]:
  """Directories the interpreter needs that /usr does not already cover."""
  exe = _python_executable()
  roots = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(exe))}
  if import_site:
    roots.add(os.path.realpath(sys.prefix))
  keep = []
  for r in sorted(roots):
    if r in ("/", "") or r == "/usr" or r.startswith("/usr/"):
      continue
    keep.append(r)
  # Drop roots nested in another root.
  return [r for r in keep if not any(r != o and r.startswith(o + "/") for o in keep)]


@functools.lru_cache(maxsize=None)
def _bwrap_help() -> str:
  exe = shutil.which("bwrap")
  if exe is None:
    return ""
  try:
    return subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    return ""


def _child_pids(pid: int) -> list[int]:
  """Direct children of `pid` (from /proc)."""
  out = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat") as f:
        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
          out.append(int(name))
    except (OSError, IndexError, ValueError):
      continue
  return out


@functools.lru_cache(maxsize=None)
def _unshare_prefix() -> tuple[str, ...]:
  """The strongest `unshare` prefix that works here (unconfined mode, non-root), or ().

  Preferred: private network and PID namespaces (every process in the latter dies with
  the run) inside a user namespace that maps only our own uid (so nothing gains
  capabilities); else the network one alone.
  """
  exe = shutil.which("unshare")
  if exe is None:
    return ()
  for extra in (("--pid", "--fork", "--kill-child"), ()):
    prefix = (exe, "--user", "--map-current-user", "--net", *extra, "--")
    try:
      ok = subprocess.run([*prefix, "/bin/true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
      ok = False
    if ok:
      return prefix
  return ()


def _parse_report(raw: bytes, secret: str) -> dict | None:
  """The harness's report, if it is well-formed and carries this run's secret."""
  try:
    pairs = harness._loads(raw)
    rep = dict(pairs)
  except (harness.ProtocolError, TypeError, ValueError):
    return None
  if not isinstance(rep.get("secret"), str):
    return None
  if not hmac.compare_digest(rep["secret"].encode(), secret.encode()):
    return None
  passed, total = rep.get("passed"), rep.get("total")
  if (
      rep.get("reason") not in REASONS
      or type(passed) is not int
      or type(total) is not int
      or not 0 <= passed <= total
  ):
    return None
  return rep


# --- The sandbox --------------------------------------------------------------------
class CodeSandbox:
  """Runs batches of programs against their tests in parallel under `SandboxConfig`.

  Which sandbox is used is decided on first use by running a trivial program through
  bubblewrap (`uses_bwrap` tells the outcome; `SandboxUnavailable` if none may run).
  """

  def __init__(self, config: SandboxConfig | None = None, **overrides):
    config = config or SandboxConfig()
    self.config = dataclasses.replace(config, **overrides) if overrides else config
    self._root = os.geteuid() == 0
    self._python = _python_executable()
    self._mode: str | None = None  # 'bwrap' | 'unconfined'
    self._mode_lock = threading.Lock()
    self._unshare: tuple[str, ...] = ()  # unconfined only
    # Slots (hence sandbox uids) are shared by concurrent `run` calls, so no two
    # running programs ever share a uid.
    self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for s in range(self.config.workers):
      self._slots.put(s)

  # -- setup --
  @property
  def uses_bwrap(self) -> bool:
    self._ensure_mode()
    return self._mode == "bwrap"

  def _ensure_mode(self) -> None:
    with self._mode_lock:
      if self._mode is None:
        self._choose_mode()

  def _choose_mode(self) -> None:
    exe = shutil.which("bwrap")
    if exe is None:
      problem = f"`bwrap` is not on PATH ({os.environ.get('PATH', '')})"
    else:
      self._mode = "bwrap"
      probe = self._execute('print("sandbox-ok")', "", slot=0, timeout_s=30.0)
      if probe.passed and probe.stdout.strip() == "sandbox-ok":
        return
      self._mode = None
      problem = (
          f"{exe} cannot run a trivial program here ({probe.reason}: "
          f"{(probe.stderr.strip() or probe.detail)[-300:]!r}; unprivileged user "
          "namespaces may be disabled, e.g. kernel.apparmor_restrict_"
          "unprivileged_userns=1 or kernel.unprivileged_userns_clone=0)"
      )
    who = "root" if self._root else f"uid {os.geteuid()}"
    if not self.config.allow_unconfined:
      raise SandboxUnavailable(
          f"code sandbox: bubblewrap is required to run model-written code, but {problem} "
          f"(running as {who}). Fix: {_INSTALL_HINT}; or, off root only, allow the "
          "weaker unconfined sandbox with allow_unconfined=True "
          "(--config.task.sandbox.allow_unconfined=True)."
      )
    if self._root:
      raise SandboxUnavailable(
          f"code sandbox: {problem}, and the unconfined sandbox never runs as root "
          f"(euid 0: programs could write host files). Fix: {_INSTALL_HINT}, or run "
          "as an unprivileged user."
      )
    self._mode = "unconfined"
    self._unshare = _unshare_prefix()
    kept = [
        "two processes (tests and program) with the secret-carrying report",
        "rlimits (cpu, memory, file size, processes, open files)",
        "wall-clock kill of the process group",
        "cleared env",
        "fresh temp dir as cwd",
    ]
    missing = [
        "no filesystem isolation (the program can read every file of uid "
        f"{os.geteuid()} and write to world-writable places such as /tmp)"
    ]
    if "--net" in self._unshare:
      kept.append("private network namespace")
    else:
      missing.append(
          "no network namespace (`unshare --net` failed): only the socket "
          "module is patched, which subprocesses or ctypes bypass"
      )
    if "--pid" in self._unshare:
      kept.append("private PID namespace (all its processes die with the run)")
    else:
      missing.append(
          "no PID namespace: the program can signal other processes of "
          "its uid, and daemons that leave the process group survive"
      )
    missing.append(f"RLIMIT_NPROC counts every process of uid {os.geteuid()}")
    log.warning(
        "Code sandbox runs UNCONFINED (allow_unconfined=True): %s. Enforced: %s. " "Missing: %s.",
        problem,
        "; ".join(kept),
        "; ".join(missing),
    )

  def _uids(self, slot: int) -> tuple[int, int]:
    """(tests uid, program uid); -1 = keep ours."""
    if not (self._root and self._mode == "bwrap"):
      return -1, -1
    base = _UID_BASE + (os.getpid() % 100_000) * 2 * _MAX_WORKERS + 2 * slot
    return base, base + 1

  def _harness_argv(
      self, uids: tuple[int, int], block_net: bool, job_fd: int, report_fd: int
  ) -> list[str]:
    c = self.config
    cpu = c.cpu_s if c.cpu_s is not None else max(1, math.ceil(c.timeout_s))
    flags = ["-I"] if c.import_site else ["-I", "-S"]
    limits = [
        cpu,
        c.memory_mb << 20,
        c.output_limit_bytes,
        c.max_processes,
        c.max_open_files,
        *uids,
        int(block_net),
        job_fd,
        report_fd,
    ]
    return [self._python, *flags, "-c", _BOOT, str(_harness_code_fd()), *map(str, limits)]

  def _bwrap_argv(self, status_fd: int) -> list[str]:
    c = self.config
    # As root, `--unshare-all` would add a user namespace that maps only uid 0,
    # where the harness could not drop to unprivileged uids; so list the rest.
    unshare = (
        ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        if self._root
        else ["--unshare-all"]
    )
    argv = [
        shutil.which("bwrap") or "bwrap",
        *unshare,
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--hostname",
        "sandbox",
    ]
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
      if os.path.islink(d):
        argv += ["--symlink", os.readlink(d), d]
      elif os.path.isdir(d):
        argv += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
      argv += ["--ro-bind-try", f, f]
    made = set()
    for r in _python_roots(c.import_site):
      # Parents bwrap would create as 0700 (unreachable after the uid drop).
      parent = os.path.dirname(r)
      chain = []
      while parent not in ("/", "") and parent not in made:
        chain.append(parent)
        parent = os.path.dirname(parent)
      for d in reversed(chain):
        argv += ["--dir", d]
        made.add(d)
      argv += ["--ro-bind", r, r]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if "--size" in _bwrap_help():
      argv += ["--size", str(c.tmpfs_mb << 20)]
    if "--perms" in _bwrap_help():
      argv += ["--perms", "1777"]
    argv += ["--tmpfs", "/tmp", "--chdir", "/tmp"]
    if self._root:  # the harness needs only these two, to drop to its uids
      argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return argv + ["--json-status-fd", str(status_fd), "--"]

  # -- running --
  def _execute(
      self,
      program: str,
      tests: str,
      slot: int,
      timeout_s: float | None = None,
      entry_point: str = "",
  ) -> Execution:
    """Run one program against its tests; every process it started is gone on return.

    entry_point: a program name the tests may see even where it shadows a builtin.
    """
    c = self.config
    job_text = _job(tests, (entry_point,) if entry_point else ())
    if job_text is None:
      return Execution(
          SANDBOX_ERROR, None, None, False, "", "", 0.0, detail="the tests do not parse"
      )
    timeout_s = c.timeout_s if timeout_s is None else timeout_s
    uids = self._uids(slot)
    bwrap = self._mode == "bwrap"
    secret = secrets.token_hex(32)
    workdir = None
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as status,
        tempfile.TemporaryFile() as job,
        tempfile.TemporaryFile() as report,
    ):
      stdin.write(program.encode("utf-8", "surrogateescape"))
      stdin.seek(0)
      job.write(f"{secret}\n{job_text}".encode("utf-8", "surrogateescape"))
      job.seek(0)
      if uids[0] >= 0:  # the harness reads the job and writes the report as uids[0]
        for f in (job, report):
          os.fchown(f.fileno(), uids[0], uids[0])
          os.fchmod(f.fileno(), 0o600)
      fds = (job.fileno(), report.fileno())
      if bwrap:
        argv = self._bwrap_argv(status.fileno()) + self._harness_argv(uids, False, *fds)
        env, pass_fds = {}, (status.fileno(), _harness_code_fd(), *fds)
      else:
        workdir = tempfile.mkdtemp(prefix="sandbox-")
        argv = list(self._unshare) + self._harness_argv(uids, "--net" not in self._unshare, *fds)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
        pass_fds = (_harness_code_fd(), *fds)
      t0 = time.monotonic()
      timed_out = False
      proc = None
      try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out,
            stderr=err,
            env=env,
            cwd=workdir,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        try:
          rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
          timed_out = True
          rc = None
      except OSError as e:  # could not even start
        return Execution(SANDBOX_ERROR, None, None, False, "", repr(e), 0.0)
      finally:
        if proc is not None:
          self._reap(proc)
        if workdir is not None:
          shutil.rmtree(workdir, ignore_errors=True)
      duration = time.monotonic() - t0
      stdout, n_out = _read_capped(out, c.output_limit_bytes)
      stderr, n_err = _read_capped(err, c.output_limit_bytes)
      report.seek(0)
      rep = _parse_report(report.read(1 << 16), secret)
      started = True
      if bwrap:
        status.seek(0)
        started = b'"child-pid"' in status.read()
    exit_code, sig = None, None
    if rc is not None:
      if rc < 0:
        sig = -rc
      elif bwrap and rc > 128:  # bwrap reports death by signal N as 128 + N
        sig = rc - 128
      else:
        exit_code = rc
    if not started:
      reason = SANDBOX_ERROR
    elif n_out >= c.output_limit_bytes or n_err >= c.output_limit_bytes:
      reason = OUTPUT_LIMIT
    elif timed_out:
      reason = TIMEOUT
    elif rep is not None:
      reason = rep["reason"]
      if reason == CORRECT and rep["passed"] != rep["total"]:
        reason = WRONG_ANSWER
    else:  # no valid report: never a pass
      reason = classify_execution(
          started=started,
          timed_out=timed_out,
          exit_code=exit_code,
          signal_num=sig,
          stdout_bytes=n_out,
          stderr_bytes=n_err,
          output_limit=c.output_limit_bytes,
          stderr=stderr,
      )
      if reason == CORRECT:
        reason = SANDBOX_ERROR
    return Execution(
        reason,
        exit_code,
        sig,
        timed_out,
        stdout,
        stderr,
        duration,
        tests_passed=None if rep is None else rep["passed"],
        tests_total=None if rep is None else rep["total"],
        detail="" if rep is None else str(rep.get("detail", ""))[:500],
    )

  def _reap(self, proc: subprocess.Popen) -> None:
    """Make sure every process of the run is gone, then reap it.

    A still-running run is ended by killing the PID namespace's init (the
    direct child of bwrap / ``unshare --fork``) first: the kernel kills the
    whole namespace before that init is reaped, so once the launcher exits
    nothing is left.  Killing the launcher first would return while the
    namespace is still being torn down.
    """
    if proc.poll() is None:
      for child in _child_pids(proc.pid):
        try:
          os.kill(child, signal.SIGKILL)
        except OSError:
          pass
      try:
        proc.wait(timeout=5)
      except subprocess.TimeoutExpired:
        pass
    try:  # the launcher itself, and what is left in its group without a namespace
      os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
      pass
    proc.wait()

  def run(
      self,
      programs: Sequence[str],
      tests: Sequence[str] | None = None,
      entry_points: Sequence[str] | None = None,
  ) -> list[Execution]:
    """Run programs (each against its tests; none = passes iff it loads) in parallel;
    one `Execution` per program, in order.  entry_points: the function under test of
    each (may shadow a builtin, e.g. MBPP's `sum`; other program names may not)."""
    self._ensure_mode()
    programs = list(programs)
    tests = [""] * len(programs) if tests is None else list(tests)
    entry_points = [""] * len(programs) if entry_points is None else list(entry_points)
    if not len(programs) == len(tests) == len(entry_points):
      raise ValueError(
          f"{len(programs)} programs, {len(tests)} tests and " f"{len(entry_points)} entry points"
      )
    if not programs:
      return []

    def one(i: int) -> Execution:
      slot = self._slots.get()
      try:
        return self._execute(programs[i], tests[i], slot, entry_point=entry_points[i] or "")
      finally:
        self._slots.put(slot)

    n = min(self.config.workers, len(programs))
    with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sandbox") as ex:
      return list(ex.map(one, range(len(programs))))

  def run_tests(
      self, programs: Sequence[str], tests: Sequence[str], entry_points: Sequence[str] | None = None
  ) -> RewardResult:
    """Reward 1.0 for each program that passes every test case of its tests, with the
    per-case counts (`RewardResult.tests_passed` / `tests_total`)."""
    if len(programs) != len(tests):
      raise ValueError(f"{len(programs)} programs but {len(tests)} tests")
    runs = self.run(programs, tests, entry_points)
    return RewardResult.from_reasons(
        [r.reason for r in runs],
        tests_passed=[r.tests_passed or 0 for r in runs],
        tests_total=[r.tests_total or 0 for r in runs],
    )


def _read_capped(f, cap: int) -> tuple[str, int]:
  size = os.fstat(f.fileno()).st_size
  f.seek(0)
  return f.read(cap).decode("utf-8", "replace"), size


@functools.lru_cache(maxsize=8)
def _default_sandbox(config: SandboxConfig) -> CodeSandbox:
  return CodeSandbox(config)


def run_tests(
    programs: Sequence[str],
    tests: Sequence[str],
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    workers: int | None = None,
    allow_unconfined: bool = False,
) -> RewardResult:
  """Batch pass/fail rewards: program i must pass every test case of tests i."""
  config = SandboxConfig(
      timeout_s=timeout_s,
      memory_mb=memory_mb,
      workers=workers or SandboxConfig.workers,
      allow_unconfined=allow_unconfined,
  )
  return _default_sandbox(config).run_tests(programs, tests)


def bwrap_usable() -> bool:
  """Whether the bubblewrap sandbox works on this machine."""
  try:
    return _default_sandbox(SandboxConfig()).uses_bwrap
  except SandboxUnavailable:
    return False

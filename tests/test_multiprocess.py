"""Two processes, one job: jax.distributed over localhost with fake CPU devices.

Two workers (2 fake CPU devices each, `jax.distributed.initialize` through
`sharding.maybe_initialize_distributed` and the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID variables, gloo CPU collectives) train configs/toy.py together on a
data=2 x tensor=2 mesh that spans both processes, checkpoint, evaluate and write the report.
A single process with 4 fake devices and the same seed must produce the same run: same
losses, same evaluation, same final parameters. See tests/multiprocess_worker.py.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from score_jax.checkpoints import state as ckpt_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from multiprocess_worker import flat_params  # noqa: E402

WORKER = os.path.join(REPO, "tests", "multiprocess_worker.py")
_JAX_JOB_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **job) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in _JAX_JOB_VARS}
  env.update(
      JAX_PLATFORMS="cpu",
      PYTHONPATH=REPO,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      **{k: str(v) for k, v in job.items()},
  )
  return env


def _spawn(workdir, out, env):
  return subprocess.Popen(
      [sys.executable, WORKER, str(workdir), str(out)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multiprocess")
  port = _free_port()
  procs = {
      "single": _spawn(tmp / "single", tmp / "single.npz", _env(4)),
      **{
          f"worker{i}": _spawn(
              tmp / "multi",
              tmp / f"multi{i}.npz",
              _env(
                  2,
                  JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                  JAX_NUM_PROCESSES=2,
                  JAX_PROCESS_ID=i,
              ),
          )
          for i in range(2)
      },
  }
  logs = {}
  try:
    for name, p in procs.items():
      logs[name] = p.communicate(timeout=420)[0]
  finally:
    for p in procs.values():  # a crashed worker leaves its peer waiting on the coordinator
      if p.poll() is None:
        p.kill()
        p.communicate()
  for name, p in procs.items():
    assert p.returncode == 0, f"{name} failed (rc {p.returncode}):\n{logs.get(name, '')[-4000:]}"
  return tmp, logs


def test_workers_form_one_job(runs):
  _, logs = runs
  assert "process 0/1: 4 devices, step 3" in logs["single"]
  for i in range(2):
    assert f"process {i}/2: 4 devices, step 3" in logs[f"worker{i}"], logs[f"worker{i}"][-2000:]


def test_two_processes_equal_one(runs):
  tmp, _ = runs
  single, multi = _records(tmp / "single"), _records(tmp / "multi")
  # Process 0 alone writes metrics: one record per step, not one per process.
  assert [(r["step"], r["split"]) for r in multi] == [(r["step"], r["split"]) for r in single]
  assert [r["split"] for r in multi] == ["train"] * 3 + ["eval"]
  train = lambda recs, k: [r[k] for r in recs if r["split"] == "train"]
  np.testing.assert_allclose(train(multi, "loss"), train(single, "loss"), rtol=0, atol=1e-5)
  for k in ("acc_t1", "acc_t2", "kl_t1", "kl_t2", "grad_norm"):
    np.testing.assert_allclose(train(multi, k), train(single, k), rtol=1e-5, atol=1e-6, err_msg=k)
  ev = lambda recs: {k: v for k, v in recs[-1].items() if k not in ("step", "split")}
  assert ev(multi) == pytest.approx(ev(single), rel=1e-6, abs=1e-6)

  p_single, p_multi = np.load(tmp / "single.npz"), np.load(tmp / "multi0.npz")
  assert sorted(p_multi.files) == sorted(p_single.files) and p_single.files
  for k in p_single.files:
    np.testing.assert_allclose(p_multi[k], p_single[k], rtol=1e-5, atol=1e-6, err_msg=k)
  assert not (tmp / "multi1.npz").exists()  # the worker writes on process 0 only


def test_multiprocess_outputs_and_checkpoint(runs):
  tmp, _ = runs
  multi = tmp / "multi"
  for f in ("report.md", "curves.png", "eval/toy_test.json", "eval/toy_test_base.json"):
    assert (multi / f).exists(), f
  ckpt = ckpt_lib.Checkpointer(str(multi / "checkpoints"))
  assert ckpt.all_steps() == [2, 3]
  # The checkpoint both processes wrote holds whole arrays: restored here, in one process,
  # it equals the gathered final parameters.
  tree, meta = ckpt.restore()
  assert int(tree["step"]) == 3 and meta["stage"] == "stage2"
  flat = flat_params(tree["params"])
  final = np.load(tmp / "multi0.npz")
  assert sorted(flat) == sorted(final.files)
  for k in final.files:
    np.testing.assert_array_equal(flat[k], final[k], err_msg=k)

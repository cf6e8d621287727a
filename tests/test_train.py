"""Training: a real learning signal, sharded == single device, kill -9 and resume, configs."""

import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from score_jax import config_lib
from score_jax.checkpoints import state as ckpt_lib
from score_jax import build
from score_jax.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import toy  # noqa: E402


def _config(**kw):
  c = toy.get_config()
  for k, v in kw.items():
    obj = c
    *path, last = k.split("__")
    for p in path:
      obj = obj[p]
    obj[last] = v
  return c


def test_stage2_steps_raise_the_reward(tmp_path):
  # The toy rule (first token's parity = the last prompt token's) is learnable only from
  # the reward; alpha=1 keeps the shaped turn-2 signal on the scale of 40 steps.
  c = _config(
      stages=("stage2",),
      stage_steps=(40,),
      task__num_eval=64,
      checkpoint_every=0,
      batch_size=32,
      loss__alpha=1.0,
  )
  trainer = Trainer(build.parts(c), str(tmp_path))
  before = trainer.evaluate(0).metrics
  history = [trainer.train_step(s) for s in range(40)]
  after = trainer.evaluate(40).metrics
  reward = [(h["acc_t1"] + h["acc_t2"]) / 2 for h in history]
  assert np.mean(reward[-5:]) > np.mean(reward[:5]) + 0.15, reward
  mean_acc = lambda m: (m["accuracy_t1"] + m["accuracy_t2"]) / 2
  assert mean_acc(after) > mean_acc(before) + 0.15, (before, after)
  assert np.isfinite([h["loss"] for h in history]).all()


def test_sequence_kl_run_learns_and_starts_at_zero_kl(tmp_path):
  """kl_estimator='sequence' through the real loop: at step 0 the policy is the reference, so
  each attempt's log-ratio (sampler log-probs minus the teacher-forced reference's, both at
  the temperature) is ~0; the run learns like the per-token one."""
  c = _config(
      stages=("stage2",),
      stage_steps=(40,),
      checkpoint_every=0,
      batch_size=32,
      loss__alpha=1.0,
      loss__kl_estimator="sequence",
  )
  trainer = Trainer(build.parts(c), str(tmp_path))
  history = [trainer.train_step(s) for s in range(40)]
  assert abs(history[0]["seq_kl_t1"]) < 1e-3 and abs(history[0]["seq_kl_t2"]) < 1e-3
  assert max(h["seq_kl_t1"] for h in history) > 1e-3  # and it moves once the policy does
  reward = [(h["acc_t1"] + h["acc_t2"]) / 2 for h in history]
  assert np.mean(reward[-5:]) > np.mean(reward[:5]) + 0.15, reward


def _final_params(trainer):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(trainer.state.params))


def test_eight_devices_equal_one(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices; see conftest")
  results = []
  for n, mesh in ((1, dict(mesh__data=1)), (8, dict(mesh__data=4, mesh__tensor=2))):
    c = _config(
        stage_steps=(2, 2), checkpoint_every=0, task__num_eval=0, mesh__num_devices=n, **mesh
    )
    trainer = Trainer(build.parts(c), str(tmp_path / str(n)))
    losses = [trainer.train_step(s)["loss"] for s in range(4)]
    assert len(trainer.state.params["embedding"].value.sharding.device_set) == n
    results.append((losses, _final_params(trainer)))
  (l1, p1), (l8, p8) = results
  np.testing.assert_allclose(l1, l8, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)


def _run_cli(workdir, *extra, wait=True):
  cmd = [
      sys.executable,
      "-m",
      "score_jax.train",
      f"--config={REPO}/configs/toy.py",
      f"--workdir={workdir}",
      "--config.checkpoint_every=1",
      "--config.stage_steps=(3,5)",
      "--config.task.num_eval=0",
      *extra,
  ]
  env = dict(os.environ, PYTHONPATH=REPO)
  if wait:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  return subprocess.Popen(
      cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )


def _restore_params(workdir):
  tree, meta = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints")).restore()
  return jax.tree.map(np.asarray, tree["params"]), meta, int(tree["step"])


def test_kill_and_resume_is_bit_identical(tmp_path):
  ref = tmp_path / "uninterrupted"
  r = _run_cli(ref)
  assert r.returncode == 0, r.stderr[-3000:]
  ref_params, _, ref_step = _restore_params(ref)
  assert ref_step == 8

  run = tmp_path / "killed"
  proc = _run_cli(run, wait=False)
  ckdir = run / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:  # kill once a few steps are on disk, mid-run
    steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if ckdir.exists() else []
    if steps and max(steps) >= 3:
      break
    if proc.poll() is not None:
      pytest.fail(f"run ended before it could be killed: {proc.stderr.read()[-3000:]}")
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())
  assert steps and max(steps) < 8, steps

  r = _run_cli(run)  # the same command again: resumes
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming at step" in r.stderr
  params, meta, step = _restore_params(run)
  assert step == 8 and meta["stage"] == "stage2"
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
  c = _config(stage_steps=(2, 1), checkpoint_every=1, task__num_eval=0)
  Trainer(build.parts(c), str(tmp_path)).run()
  ckdir = tmp_path / "checkpoints"
  latest = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  for root, _, files in os.walk(ckdir / str(latest) / "state"):
    for f in files:
      if os.path.basename(root) == "d" or f == "_METADATA":
        with open(os.path.join(root, f), "r+b") as fh:
          fh.truncate(3)
  trainer = Trainer(build.parts(c), str(tmp_path))
  with caplog.at_level(logging.WARNING):
    assert trainer.maybe_restore()
  assert int(trainer.state.step) == latest - 1
  assert any(
      f"step {latest}" in r.getMessage() and "falling back" in r.getMessage()
      for r in caplog.records
  )


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(loss__beta1=-0.1), "loss.beta1"),
        (dict(loss__beta2=-1.0), "loss.beta2"),
        (dict(stages=("single_turn",), stage_steps=(4,)), "loss.alpha"),
        (dict(stages=("stage3",)), "stages"),
        (dict(stage_steps=(1,)), "stage_steps"),
        (dict(batch_size=6, mesh__data=4), "batch_size"),
        (dict(micro_batch_size=3), "micro_batch_size"),
        (dict(loss__kl_estimator="k2"), "loss.kl_estimator"),
        (dict(model__source="s3"), "model.source"),
        (dict(task__name="imagenet"), "task.name"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=f"config.{field}="):
    config_lib.validate(_config(**overrides), num_devices=8)


def test_cli_rejects_bad_override_before_loading(tmp_path):
  r = _run_cli(tmp_path, "--config.loss.beta1=-1")
  assert r.returncode != 0
  assert "config.loss.beta1=-1" in r.stderr

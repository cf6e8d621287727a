"""One process of the multi-process training test (tests/test_multiprocess.py).

  JAX_COORDINATOR_ADDRESS=localhost:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
  XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \
  python tests/multiprocess_worker.py WORKDIR OUT.npz

Runs a few steps of configs/toy.py through `Trainer.run()` (checkpoints, metrics.jsonl, final
eval and report) on a
mesh over every device of every process, then gathers the final parameters to every host;
process 0 writes them to OUT.npz. Without the JAX_* variables it is the single-process
reference run.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from score_jax import sharding  # noqa: E402


def flat_params(tree) -> dict[str, np.ndarray]:
  """{'blocks/0/attn/q_proj': array} (the same names for an orbax-restored tree)."""
  name = lambda k: str(getattr(k, "key", getattr(k, "idx", k)))
  return {
      "/".join(name(k) for k in path): np.asarray(v)
      for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def main(workdir: str, out: str):
  # Reads JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (the CLI does the same
  # with config.distributed='auto'); must run before anything touches the devices.
  sharding.maybe_initialize_distributed("auto")
  jax.config.update("jax_default_matmul_precision", "highest")
  from configs import toy
  from score_jax import build
  from score_jax.trainer import Trainer

  c = toy.get_config()
  c.stages, c.stage_steps = ("stage2",), (3,)  # one stage: one train-step compile
  c.task.num_eval = 8  # final greedy eval of policy and base model, report.md
  c.checkpoint_every = 2  # a mid-run and a final checkpoint
  c.mesh.data = 2
  c.mesh.tensor = 2  # parameters split across devices (and processes), not only the batch
  trainer = Trainer(build.parts(c), workdir)
  result = trainer.run()
  params = nnx.to_pure_dict(trainer.state.params)
  # Parameters sharded over other processes' devices are gathered to every host.
  params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() == 0:
    np.savez(out, **flat_params(params))
  print(
      f"process {jax.process_index()}/{jax.process_count()}: {jax.device_count()} devices, "
      f"step {result['step']}",
      flush=True,
  )


if __name__ == "__main__":
  main(*sys.argv[1:3])

"""Orbax training-state checkpoints: cross-mesh restore, corrupt-step fallback, keep-N, errors."""

import glob
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from score_jax import sharding as sh
from score_jax.checkpoints.errors import CheckpointError
from score_jax.checkpoints.state import Checkpointer, abstract_target
from score_jax.model import abstract_model, init_model, tiny

CFG = tiny("llama")


def _train_state(mesh):
  model = sh.shard_model(init_model(CFG, seed=2), mesh)
  params = nnx.state(model)
  opt_state = optax.adam(1e-2).init(params)
  # One update so that mu/nu are non-zero.
  grads = jax.tree.map(lambda p: jnp.cos(p), params)
  _, opt_state = optax.adam(1e-2).update(grads, opt_state, params)
  return {
      "params": params,
      "opt_state": opt_state,
      "step": jnp.asarray(7, jnp.int32),
      "rng": jax.random.split(jax.random.key(5), 2),
  }


def _target(mesh):
  params = nnx.state(abstract_model(CFG))
  param_sh = sh.model_shardings(params, mesh)
  opt_state = jax.eval_shape(optax.adam(1e-2).init, params)
  rep = jax.sharding.NamedSharding(mesh, P())
  return {
      "params": abstract_target(params, param_sh),
      "opt_state": abstract_target(opt_state, sh.tree_shardings_like(opt_state, param_sh)),
      "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
      "rng": jax.ShapeDtypeStruct((2,), jax.random.key(0).dtype, sharding=rep),
  }


def _assert_tree_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A checkpoint written on a (data=2, fsdp=2, tensor=2) mesh."""
  mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  state = _train_state(mesh)
  assert state["params"]["embedding"].get_value().sharding.spec == P("tensor", "fsdp")
  directory = tmp_path_factory.mktemp("ckpt")
  with Checkpointer(directory) as ckpt:
    assert ckpt.save(10, state, {"stage": 2, "data_position": 1234})
  return directory, state


@pytest.mark.parametrize(
    "axes",
    [{"data": 1, "fsdp": 4, "tensor": 2}, {"data": 1}],
    ids=["fsdp4-tensor2", "single-device"],
)
def test_restore_onto_another_mesh_is_bit_exact(saved, axes):
  directory, state = saved
  devices = jax.devices()[: int(np.prod(list(axes.values())))]
  mesh = sh.make_mesh(axes, devices=devices)
  ckpt = Checkpointer(directory)
  assert ckpt.latest_step() == 10
  restored, meta = ckpt.restore(target=_target(mesh))
  assert meta == {"stage": 2, "data_position": 1234}
  _assert_tree_equal(restored, state)
  # Structure and metadata of the target are rebuilt: nnx.State/Param, optax states, keys.
  assert isinstance(restored["params"], nnx.State)
  emb = restored["params"]["embedding"]
  assert isinstance(emb, nnx.Param) and emb.get_metadata()["out_sharding"] == ("vocab", "embed")
  assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
  assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
  emb = emb.get_value()
  assert emb.sharding.mesh == mesh
  if len(devices) == 8:
    assert emb.sharding.spec == P("tensor", "fsdp")
    assert emb.addressable_shards[0].data.shape == (CFG.vocab_size // 2, CFG.embed_dim // 4)
    assert restored["opt_state"][0].mu["embedding"].get_value().sharding.spec == P("tensor", "fsdp")
  ckpt.close()


def test_restore_without_target(saved):
  directory, state = saved
  restored, meta = Checkpointer(directory).restore()
  assert meta["stage"] == 2
  np.testing.assert_array_equal(
      restored["params"]["embedding"], np.asarray(state["params"]["embedding"].get_value())
  )
  np.testing.assert_array_equal(
      jax.random.key_data(restored["rng"]), jax.random.key_data(state["rng"])
  )
  assert int(restored["step"]) == 7


def test_target_mismatch_names_the_key(saved):
  directory, _ = saved
  ckpt = Checkpointer(directory)
  mesh = sh.make_mesh({"data": -1})
  target = _target(mesh)
  bad = dict(target, params=nnx.state(abstract_model(CFG.replace(embed_dim=32, head_dim=8))))
  with pytest.raises(CheckpointError, match=r"key 'params/blocks/0/attn/k_proj'.*shape"):
    ckpt.restore(target=bad)
  with pytest.raises(CheckpointError, match=r"target key 'extra' is not in checkpoint step 10"):
    ckpt.restore(target=dict(target, extra=jax.ShapeDtypeStruct((), jnp.int32)))
  with pytest.raises(CheckpointError, match=r"has key 'step' that the restore target lacks"):
    ckpt.restore(target={k: v for k, v in target.items() if k != "step"})
  with pytest.raises(CheckpointError, match=r"step 3 not found.*\[10\]"):
    ckpt.restore(step=3)


def _small(step):
  return {"w": jax.random.normal(jax.random.key(step), (32, 32)) + step, "step": jnp.asarray(step)}


def _corrupt_truncate(step_dir):
  files = glob.glob(os.path.join(step_dir, "state", "d", "*"))
  assert files
  for f in files:
    with open(f, "r+b") as fh:
      fh.truncate(8)


def _corrupt_delete(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


# Orbax leaves the reads of the other arrays of a failed restore to a closed event loop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "corrupt", [_corrupt_truncate, _corrupt_delete], ids=["truncated", "deleted"]
)
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, corrupt):
  with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
    for step in (1, 2):
      ckpt.save(step, _small(step), {"step": step})
  corrupt(str(tmp_path / "2"))
  ckpt = Checkpointer(tmp_path)
  target = abstract_target(_small(0))
  with caplog.at_level(logging.WARNING):
    restored, meta = ckpt.restore(target=target)
  assert meta == {"step": 1}
  _assert_tree_equal(restored, _small(1))
  assert any(
      "checkpoint step 2" in r.getMessage() and "falling back" in r.getMessage()
      for r in caplog.records
  )
  with pytest.raises(CheckpointError, match="step 2 .* is unreadable"):
    ckpt.restore(step=2, target=target)


def test_keep_n_async_and_existing_step(tmp_path):
  ckpt = Checkpointer(tmp_path, max_to_keep=2, async_save=True)
  for step in range(1, 5):
    assert ckpt.save(step, _small(step), {"step": step})
  ckpt.wait()
  assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
  assert ckpt.save(4, _small(0)) is False  # no silent overwrite...
  assert ckpt.save(4, _small(40), {"step": 40}, force=True)  # ...unless forced.
  restored, meta = ckpt.restore(target=abstract_target(_small(0)))
  assert meta == {"step": 40}
  _assert_tree_equal(restored, _small(40))
  ckpt.close()
  assert sorted(os.listdir(tmp_path)) == ["3", "4"]  # no temporary directories left.
  # A save interrupted before orbax's final rename is not a checkpoint.
  os.makedirs(tmp_path / "5.orbax-checkpoint-tmp-123" / "state")
  assert Checkpointer(tmp_path).latest_step() == 4


def test_empty_directory_and_bad_metadata(tmp_path):
  ckpt = Checkpointer(tmp_path / "none")
  assert ckpt.latest_step() is None
  with pytest.raises(CheckpointError, match="no checkpoint found in .*none"):
    ckpt.restore()
  with pytest.raises(CheckpointError, match="not JSON-serialisable"):
    ckpt.save(1, _small(1), {"bad": object()})
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(tmp_path, max_to_keep=0)

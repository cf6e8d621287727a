"""Meshes, logical->mesh sharding rules, sharded forward == single-device forward."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from score_jax import sharding as sh
from score_jax.model import abstract_model, init_model, tiny

AXES = {"data": 2, "fsdp": 2, "tensor": 2}


@pytest.fixture(scope="module")
def mesh():
  return sh.make_mesh(AXES)


def test_make_mesh_auto_axes_and_fill():
  m = sh.make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
  assert m.axis_names == ("data", "fsdp", "tensor")
  assert dict(m.shape) == AXES
  assert m.axis_types == (jax.sharding.AxisType.Auto,) * 3
  m = sh.make_mesh([("tensor", 2), ("data", -1)])  # order is kept.
  assert m.axis_names == ("tensor", "data") and dict(m.shape) == {"tensor": 2, "data": 4}
  one = sh.make_mesh({"data": -1}, devices=jax.devices()[:1])
  assert dict(one.shape) == {"data": 1}


@pytest.mark.parametrize(
    "axes, match",
    [
        ({"data": 2, "fsdp": 2}, r"multiply to 4 but there are 8 devices"),
        ({"data": 3, "fsdp": -1}, r"'fsdp'=-1.*does not divide the 8 devices"),
        ({"data": -1, "fsdp": -1}, r"only one axis may have size -1"),
        ({"data": 0, "fsdp": -1}, r"mesh axis 'data': size 0"),
        ([("data", 2), ("data", 4)], r"duplicate axis name"),
        ({}, r"at least one axis"),
    ],
)
def test_make_mesh_errors(axes, match):
  with pytest.raises(ValueError, match=match):
    sh.make_mesh(axes)


def test_logical_to_spec_rules_and_fallbacks(mesh):
  spec = sh.logical_to_spec
  assert spec(("vocab", "embed"), (256, 64), mesh) == P("tensor", "fsdp")
  assert spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh) == P("fsdp", "tensor")
  # 1 kv head does not divide tensor=2 -> replicated instead of failing.
  assert spec(("embed", "kv_heads", "head_dim"), (64, 1, 16), mesh) == P("fsdp")
  assert spec(("norm",), (64,), mesh) == P()
  # Batch over data*fsdp; 'embed'->fsdp is then taken, so it is replicated.
  assert spec(("batch", "length", "embed"), (8, 5, 64), mesh) == P(("data", "fsdp"))
  # Batch 2 only divides data=2: fsdp is dropped.
  assert spec(("batch", None), (2, 5), mesh) == P("data")
  assert spec(("batch",), (3,), mesh) == P()
  assert spec(("unknown", None), (8, 8), mesh) == P()
  assert spec(None, (8, 8), mesh) == P()
  with pytest.raises(ValueError, match="rank"):
    spec(("embed",), (8, 8), mesh)
  # Custom rules; axes absent from the mesh are ignored; later rules are fallbacks.
  rules = (("embed", ("pipeline", "tensor")), ("mlp", "tensor"), ("mlp", "fsdp"))
  assert spec(("embed", "mlp"), (64, 128), mesh, rules) == P("tensor", "fsdp")
  assert spec(("mlp", "embed"), (128, 64), mesh, rules) == P("tensor")


def test_model_shardings_abstract_and_kv_fallback(mesh):
  cfg = tiny("llama", num_kv_heads=1)
  state = nnx.state(abstract_model(cfg))
  shardings = sh.model_shardings(state, mesh)
  attn = shardings["blocks"][0]["attn"]
  assert attn["q_proj"].get_value().spec == P("fsdp", "tensor")
  assert attn["k_proj"].get_value().spec == P("fsdp")  # 1 kv head: replicated over tensor.
  assert shardings["lm_head"].get_value().spec == P("fsdp", "tensor")
  assert shardings["final_norm"]["scale"].get_value().spec == P()
  assert jax.tree.structure(shardings) == jax.tree.structure(state)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_sharded_forward_matches_single_device(mesh, family):
  cfg = tiny(family, num_heads=4, num_kv_heads=2)
  model = init_model(cfg, seed=1)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, (8, 12)))
  mask = jnp.asarray(np.arange(12)[None, :] < np.array([12, 9, 5, 12, 7, 12, 3, 10])[:, None])
  graphdef, state = nnx.split(model)
  fwd = lambda s, t, m: nnx.merge(graphdef, s)(t, m)
  ref = np.asarray(jax.jit(fwd)(state, tokens, mask))

  sh.shard_model(model, mesh)
  graphdef, state = nnx.split(model)
  state_sh = sh.model_shardings(state, mesh)
  emb = state["embedding"].get_value()
  assert emb.sharding.spec == P("tensor", "fsdp")
  assert emb.addressable_shards[0].data.shape == (cfg.vocab_size // 2, cfg.embed_dim // 2)
  attn = state["blocks"][0]["attn"]
  assert attn["q_proj"].get_value().sharding.spec == P("fsdp", "tensor")
  assert attn["k_proj"].get_value().sharding.spec == P("fsdp", "tensor")
  assert state["blocks"][0]["mlp"]["down_proj"].get_value().sharding.spec == P("tensor", "fsdp")

  batch_sh = sh.batch_sharding(mesh, 2)
  out = jax.jit(
      fwd, in_shardings=(state_sh, batch_sh, batch_sh), out_shardings=sh.batch_sharding(mesh, 3)
  )(state, tokens, mask)
  assert out.sharding.spec == P(("data", "fsdp"), None, None)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)


def test_tree_shardings_like_optimizer_state(mesh):
  cfg = tiny("llama")
  state = nnx.state(abstract_model(cfg))
  param_sh = sh.model_shardings(state, mesh)
  q_spec = P("fsdp", "tensor")
  # optax over the nnx.State itself, and over its pure-dict form.
  for params in (state, nnx.to_pure_dict(state)):
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, params)
    opt_sh = sh.tree_shardings_like(opt_state, param_sh)
    mu_q = opt_sh[0].mu["blocks"][0]["attn"]["q_proj"]
    nu_q = opt_sh[0].nu["blocks"][0]["attn"]["q_proj"]
    for s in (mu_q, nu_q):
      s = s.get_value() if isinstance(s, nnx.Variable) else s
      assert s.spec == q_spec
    assert opt_sh[0].count.spec == P()
    assert jax.tree.structure(opt_sh) == jax.tree.structure(opt_state)
  # nnx.Optimizer wraps its state in Variables.
  model = init_model(cfg)
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
  opt_state = nnx.state(opt)
  opt_sh = sh.tree_shardings_like(opt_state, sh.model_shardings(model, mesh))
  specs = {
      jax.tree_util.keystr(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(opt_sh)[0]
  }
  mu_specs = [v for k, v in specs.items() if "mu" in k and "q_proj" in k]
  assert mu_specs and all(s == q_spec for s in mu_specs)
  assert all(s == P() for k, s in specs.items() if "count" in k or "step" in k)
  placed = jax.device_put(opt_state, opt_sh)
  assert jax.tree.structure(placed) == jax.tree.structure(opt_state)


def test_init_sharded_equals_init_model(mesh):
  cfg = tiny("llama")
  model = sh.init_sharded(lambda: init_model(cfg, seed=3), mesh)
  emb = nnx.state(model)["embedding"].get_value()
  assert emb.sharding.spec == P("tensor", "fsdp")
  np.testing.assert_array_equal(
      np.asarray(emb), np.asarray(nnx.state(init_model(cfg, seed=3))["embedding"].get_value())
  )


def test_batch_sharding_and_shard_batch(mesh):
  assert sh.batch_sharding(mesh, 2).spec == P(("data", "fsdp"), None)
  assert sh.data_axes(sh.make_mesh({"fsdp": 2, "tensor": 4})) == ("fsdp",)
  assert sh.batch_sharding(sh.make_mesh({"tensor": 8}), 1).spec == P(None)
  batch = sh.shard_batch({"tokens": np.zeros((8, 5), np.int32), "n": np.int32(3)}, mesh)
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
  with pytest.raises(ValueError, match=r"tokens.*size 6.*4 data-parallel"):
    sh.shard_batch({"tokens": np.zeros((6, 5))}, mesh)


_ENV = (
    "TPU_WORKER_HOSTNAMES",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "MEGASCALE_NUM_SLICES",
)


def test_maybe_initialize_distributed(monkeypatch):
  import os

  for k in list(os.environ):
    if k in _ENV or k.startswith("MEGASCALE_"):
      monkeypatch.delenv(k)
  calls = []
  monkeypatch.setattr(sh, "_distributed_initialized", False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)

  assert sh.maybe_initialize_distributed(False) is False
  assert sh.maybe_initialize_distributed("auto") is False  # single host.
  assert calls == []
  with pytest.raises(ValueError, match="enabled="):
    sh.maybe_initialize_distributed("sometimes")

  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "host-0,host-1")
  assert sh.maybe_initialize_distributed("auto") is True
  assert sh.maybe_initialize_distributed("auto") is True  # idempotent.
  assert sh.maybe_initialize_distributed(True) is True
  assert calls == [{}]

  monkeypatch.setattr(sh, "_distributed_initialized", False)
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  assert (
      sh.maybe_initialize_distributed(
          "auto", coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1
      )
      is True
  )
  assert calls[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}
  assert sh.multihost_env_detected({"MEGASCALE_NUM_SLICES": "2"})
  assert not sh.multihost_env_detected({"TPU_WORKER_HOSTNAMES": "localhost"})

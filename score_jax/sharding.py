"""Device meshes, logical-axis sharding rules and multi-host initialisation.

Parameters carry logical axis names (`nnx.Param(..., out_sharding=('embed', 'mlp'))`);
`rules` map each logical name to mesh axes, MaxText style:

    rules = (('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'tensor'), ...)

A rule's mesh axes are dropped for one array dimension when they are not in the mesh, do not
divide that dimension (e.g. 1 kv head on a tensor axis of 2 -> replicated) or were already used
by an earlier dimension of the same array, so any config shards as much as it can instead of
failing. A logical name may appear in several rules: the first one that keeps at least one
mesh axis wins.

Typical use with the graphdef/state split (the state is a pytree a jitted function can take):

    mesh = make_mesh({'data': -1, 'fsdp': 2, 'tensor': 2})
    model = shard_model(init_model(cfg), mesh)          # in place, returns the model
    graphdef, state = nnx.split(model)
    state_sh = model_shardings(state, mesh)             # same tree, NamedSharding leaves
    opt_sh = tree_shardings_like(opt_state, state_sh)   # Adam mu/nu follow the params
    step = jax.jit(train_step, in_shardings=(state_sh, opt_sh, batch_sharding(mesh, 2)),
                   out_shardings=(state_sh, opt_sh, None))
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = Union[str, Sequence[str], None]
Rules = Sequence[tuple[str, MeshAxes]]

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
)
"""Logical axis name -> mesh axes. 'batch' also defines the data axes of `batch_sharding`."""

_LOGICAL_METADATA_KEYS = ("out_sharding", "sharding_names", "sharding")


# --------------------------------------------------------------------------------------------
# Mesh
# --------------------------------------------------------------------------------------------


def _axes_items(axes) -> list[tuple[str, int]]:
  if isinstance(axes, Mapping) or hasattr(axes, "items"):
    items = list(axes.items())
  else:
    items = [tuple(a) for a in axes]
  if not items:
    raise ValueError("mesh axes: at least one axis is needed, e.g. {'data': -1}")
  for item in items:
    if len(item) != 2:
      raise ValueError(f"mesh axes: expected (name, size) pairs, got {item!r}")
  return items


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Validated {name: size} with the single -1 (if any) filled from `num_devices`."""
  items = _axes_items(axes)
  names = [n for n, _ in items]
  for name, size in items:
    if not isinstance(name, str) or not name:
      raise ValueError(f"mesh axes: axis names must be non-empty strings, got {name!r}")
    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer))
        or (size <= 0 and size != -1)
    ):
      raise ValueError(
          f"mesh axis {name!r}: size {size!r} must be a positive integer or -1 "
          "(= all remaining devices)"
      )
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"mesh axes: duplicate axis name(s) {dup}")
  fill = [n for n, s in items if s == -1]
  if len(fill) > 1:
    raise ValueError(f"mesh axes {fill}: only one axis may have size -1")
  known = math.prod(int(s) for _, s in items if s != -1)
  shape = {n: int(s) for n, s in items}
  if fill:
    if num_devices % known:
      raise ValueError(
          f"mesh axis {fill[0]!r}=-1: the other axes multiply to {known}, which does not divide "
          f"the {num_devices} devices ({dict(items)})"
      )
    shape[fill[0]] = num_devices // known
  elif known != num_devices:
    raise ValueError(
        f"mesh axes {dict(items)} multiply to {known} but there are {num_devices} devices; "
        f"resize an axis (e.g. {names[0]!r}) or set one axis to -1"
    )
  return shape


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with `Auto` axis types from ordered {name: size}; one size may be -1 (= fill).

  `devices` defaults to all devices (`jax.devices()`); the product of the sizes must equal
  their number.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(axes, len(devices))
  names = tuple(shape)
  return jax.make_mesh(
      tuple(shape.values()),
      names,
      axis_types=(jax.sharding.AxisType.Auto,) * len(names),
      devices=devices,
  )


# --------------------------------------------------------------------------------------------
# Logical axis rules
# --------------------------------------------------------------------------------------------


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
  if axes is None:
    return ()
  if isinstance(axes, str):
    return (axes,)
  return tuple(axes)


def _mesh_sizes(mesh) -> dict[str, int]:
  return dict(mesh.shape)


def _rule_candidates(name: str, rules: Rules) -> list[tuple[str, ...]]:
  return [_as_tuple(axes) for logical, axes in rules if logical == name]


def logical_to_spec(
    logical_axes: Sequence[str | Sequence[str] | None] | None,
    shape: Sequence[int],
    mesh,
    rules: Rules = DEFAULT_RULES,
) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dimensions have these logical names.

  Per dimension (left to right) the mesh axes of the first matching rule are kept when they
  exist in `mesh`, are unused by earlier dimensions and keep dividing the dimension; the
  others are dropped (a dimension with none left is replicated). Names with no rule, and
  `None`, are replicated. `logical_axes=None` replicates the whole array.
  """
  shape = tuple(shape)
  if logical_axes is None:
    return PartitionSpec()
  logical_axes = tuple(logical_axes)
  if len(logical_axes) != len(shape):
    raise ValueError(f"logical axes {logical_axes} do not match the rank of shape {shape}")
  sizes = _mesh_sizes(mesh)
  used: set[str] = set()
  spec = []
  for names, dim in zip(logical_axes, shape):
    names = _as_tuple(names)
    kept: list[str] = []
    for name in names:
      for candidate in _rule_candidates(name, rules):
        picked, prod = [], math.prod(sizes[a] for a in kept)
        for axis in candidate:
          if axis not in sizes or axis in used or axis in kept or axis in picked:
            continue
          if dim % (prod * sizes[axis]):
            continue
          picked.append(axis)
          prod *= sizes[axis]
        if picked:
          kept.extend(picked)
          break
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  while spec and spec[-1] is None:
    spec.pop()
  return PartitionSpec(*spec)


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def _variable_value(v: nnx.Variable):
  return v.get_value() if hasattr(v, "get_value") else v.value


def variable_logical_axes(v: nnx.Variable) -> tuple | None:
  """The logical axis names stored on a Variable (`out_sharding` metadata), if any."""
  meta = v.get_metadata()
  for key in _LOGICAL_METADATA_KEYS:
    axes = meta.get(key)
    if axes is not None and not isinstance(axes, (jax.sharding.Sharding, PartitionSpec)):
      return tuple(axes)
    if isinstance(axes, PartitionSpec):
      return tuple(axes)
  return None


def replicated(mesh) -> NamedSharding:
  """Every device holds the whole array (scalars, step counters, PRNG keys)."""
  return NamedSharding(mesh, PartitionSpec())


_replicated = replicated


def model_shardings(model_or_state, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """NamedShardings for `nnx.state(model)` (or for a given state / abstract state).

  Returns the same tree with every Variable's value replaced by its NamedSharding, like
  `nnx.get_partition_spec` does with specs; usable as jit in/out_shardings for the state
  and with `jax.device_put`. Leaves outside Variables and Variables without logical axes are
  replicated.
  """
  state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state

  def f(x):
    if _is_variable(x):
      value = _variable_value(x)
      axes = variable_logical_axes(x)
      shape = np.shape(value) if not hasattr(value, "shape") else tuple(value.shape)
      if axes is not None and len(axes) == len(shape):
        sharding = NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))
      else:
        sharding = _replicated(mesh)
      return x.replace(sharding)
    return _replicated(mesh)

  return jax.tree.map(f, state, is_leaf=_is_variable)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.Module:
  """Moves the model's state onto its shardings, in place (`nnx.update`); returns the model.

  Afterwards `nnx.split(model)` gives a sharded state, and `model_shardings(state, mesh)`
  the matching in/out_shardings for jitted functions of (graphdef, state).
  """
  state = nnx.state(model)
  nnx.update(model, jax.device_put(state, model_shardings(state, mesh, rules)))
  return model


def init_sharded(
    factory: Callable[[], nnx.Module], mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> nnx.Module:
  """Builds `factory()` with every parameter created directly on its shards (no full copy
  on one device), e.g. `init_sharded(lambda: init_model(cfg), mesh)`."""
  abstract = nnx.eval_shape(factory)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = model_shardings(abstract_state, mesh, rules)
  state = jax.jit(lambda: nnx.split(factory())[1], out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def _key_str(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _path_tuple(path) -> tuple[str, ...]:
  return tuple(_key_str(k) for k in path)


def _spec_fits(sharding: NamedSharding, shape: tuple[int, ...]) -> bool:
  spec = tuple(sharding.spec)
  if len(spec) > len(shape):
    return False
  sizes = _mesh_sizes(sharding.mesh)
  for axes, dim in zip(spec, shape):
    if dim % math.prod(sizes[a] for a in _as_tuple(axes)):
      return False
  return True


def _first_mesh(tree):
  for s in jax.tree.leaves(tree, is_leaf=_is_variable):
    s = _variable_value(s) if _is_variable(s) else s
    if isinstance(s, NamedSharding):
      return s.mesh
  return None


def tree_shardings_like(tree, param_shardings, mesh: Mesh | None = None):
  """Shardings for a tree whose leaves mirror the params (optax state: Adam mu/nu...).

  A leaf gets the sharding of the param whose path is the longest suffix of the leaf's path
  (e.g. `opt_state[0].mu['blocks'][0]['attn']['q_proj']` -> params['blocks'][0]['attn']
  ['q_proj']) provided it fits the leaf's shape; everything else (step counts, scalars,
  factored moments) is replicated. Variables in `tree` keep their structure, as in
  `model_shardings`.
  """
  mesh = mesh or _first_mesh(param_shardings)
  if mesh is None:
    raise ValueError("tree_shardings_like: param_shardings holds no NamedSharding; pass mesh=")
  table: dict[tuple[str, ...], NamedSharding] = {}
  for path, s in jax.tree_util.tree_flatten_with_path(param_shardings, is_leaf=_is_variable)[0]:
    s = _variable_value(s) if _is_variable(s) else s
    if isinstance(s, NamedSharding):
      table[_path_tuple(path)] = s
  longest = max((len(k) for k in table), default=0)

  def pick(path, leaf):
    value = _variable_value(leaf) if _is_variable(leaf) else leaf
    shape = tuple(getattr(value, "shape", np.shape(value)))
    keys = _path_tuple(path)
    sharding = None
    for n in range(min(len(keys), longest), 0, -1):
      cand = table.get(keys[-n:])
      if cand is not None and _spec_fits(cand, shape):
        sharding = cand
        break
    if sharding is None:
      sharding = _replicated(mesh)
    return leaf.replace(sharding) if _is_variable(leaf) else sharding

  return jax.tree_util.tree_map_with_path(pick, tree, is_leaf=_is_variable)


def data_axes(mesh, rules: Rules = DEFAULT_RULES) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over (the 'batch' rule, present axes only)."""
  sizes = _mesh_sizes(mesh)
  for candidate in _rule_candidates("batch", rules):
    axes = tuple(a for a in candidate if a in sizes)
    if axes:
      return axes
  return ()


def batch_sharding(mesh: Mesh, ndim: int = 2, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  """Dimension 0 over the data axes ('batch' rule), the other `ndim - 1` dims replicated."""
  if ndim < 1:
    raise ValueError(f"batch_sharding: ndim={ndim} must be >= 1 (dim 0 is the batch)")
  axes = data_axes(mesh, rules)
  return NamedSharding(mesh, PartitionSpec(axes or None, *([None] * (ndim - 1))))


def shard_batch(batch, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """Puts every array of a (host-local on multi-host) batch pytree on `batch_sharding`.

  Raises ValueError when a batch size is not divisible by the data-parallel size.
  """
  n = math.prod(_mesh_sizes(mesh)[a] for a in data_axes(mesh, rules))

  def put(path, x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0:
      return jax.device_put(x, _replicated(mesh))
    sharding = batch_sharding(mesh, x.ndim, rules)
    if jax.process_count() > 1 and not isinstance(x, jax.Array):
      return jax.make_array_from_process_local_data(sharding, x)
    if x.shape[0] % n:
      raise ValueError(
          f"batch leaf {jax.tree_util.keystr(path)}: size {x.shape[0]} of dim 0 "
          f"is not divisible by the {n} data-parallel shards {data_axes(mesh, rules)}"
      )
    return jax.device_put(x, sharding)

  return jax.tree_util.tree_map_with_path(put, batch)


# --------------------------------------------------------------------------------------------
# Multi-host
# --------------------------------------------------------------------------------------------


def to_host(tree):
  """numpy copies of every array of `tree`, whole (global) even on multi-host.

  An array that spans other processes' devices is all-gathered (`process_allgather`, a
  collective: every process must call this in the same order); others are plain copies.
  """

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(get, tree)


_distributed_initialized = False


def multihost_env_detected(env: Mapping[str, str] | None = None) -> bool:
  """True when environment variables indicate a multi-process (multi-host) job."""
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1:
    return True
  if any(k.startswith("MEGASCALE_") and env[k] for k in env):
    return True
  try:
    if int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
      return True
  except ValueError:
    pass
  return False


def maybe_initialize_distributed(
    enabled: bool | str = "auto",
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
  """Calls `jax.distributed.initialize` once, when asked to or (auto) when multi-host.

  enabled: True -> always initialise; False -> never; 'auto' -> when the environment
  (`TPU_WORKER_HOSTNAMES` with several hosts, `MEGASCALE_*`, `JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES>1`) or an explicit `coordinator_address` says multi-host.
  The overrides are passed on (None = let JAX detect them from the cluster).
  Must run before anything touches the devices. Idempotent. Returns whether the
  distributed runtime is initialised.
  """
  global _distributed_initialized
  if isinstance(enabled, str):
    low = enabled.strip().lower()
    if low == "auto":
      enabled = "auto"
    elif low in ("true", "1", "yes"):
      enabled = True
    elif low in ("false", "0", "no", ""):
      enabled = False
    else:
      raise ValueError(
          f"maybe_initialize_distributed: enabled={enabled!r}; expected " "True, False or 'auto'"
      )
  if _distributed_initialized or _jax_distributed_is_initialized():
    _distributed_initialized = True
    return True
  if enabled == "auto":
    enabled = coordinator_address is not None or multihost_env_detected()
  if not enabled:
    return False
  # jax.distributed.initialize reads JAX_COORDINATOR_ADDRESS itself but not these two, which
  # a plain multi-process job (no cluster manager, e.g. CPU processes on one machine) needs.
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  kwargs: dict[str, Any] = {}
  if coordinator_address is not None:
    kwargs["coordinator_address"] = coordinator_address
  if num_processes is not None:
    kwargs["num_processes"] = num_processes
  if process_id is not None:
    kwargs["process_id"] = process_id
  if local_device_ids is not None:
    kwargs["local_device_ids"] = local_device_ids
  logging.info("jax.distributed.initialize(%s)", kwargs)
  jax.distributed.initialize(**kwargs)
  _distributed_initialized = True
  return True


def _jax_distributed_is_initialized() -> bool:
  fn = getattr(jax.distributed, "is_initialized", None)
  try:
    return bool(fn()) if fn is not None else False
  except Exception:  # pragma: no cover - defensive against API changes.
    return False

"""Save/restore of the training state with orbax-checkpoint.

A step directory holds two items: 'state' (the array pytree, written sharded: every host
writes its own shards) and 'metadata' (JSON: the caller's metadata such as the SCoRe stage
and data position, plus which leaves are PRNG keys). Orbax writes into a temporary
directory and renames it when complete, so a crash never leaves a half-written step behind.

The state is any pytree of arrays / scalars: dicts, lists, tuples, optax NamedTuples,
`nnx.State` and `nnx.Variable`s (saved as their plain values), typed PRNG keys (saved as
`jax.random.key_data` and re-wrapped on restore). Restore takes a `target` with the same
structure whose leaves are arrays or `jax.ShapeDtypeStruct`s; their shardings decide where
the restored arrays go, so a checkpoint written on one mesh restores onto any other
(see `abstract_target`).

    ckpt = Checkpointer('/ckpts/run1', max_to_keep=3, async_save=True)
    ckpt.save(step, {'params': params, 'opt_state': opt_state, 'step': step_arr, 'rng': key},
              metadata={'stage': 1, 'data_position': 1234})
    state, meta = ckpt.restore(target=abstract_target(state_like, shardings))
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from score_jax.checkpoints.errors import CheckpointError

logger = logging.getLogger(__name__)

_STATE = "state"
_METADATA = "metadata"
_FORMAT = "score_jax.train_state/1"


# --------------------------------------------------------------------------------------------
# Pytree conversions
# --------------------------------------------------------------------------------------------


def _is_node(x) -> bool:
  return isinstance(x, (nnx.Variable, nnx.State))


def _variable_value(v: nnx.Variable):
  return v.get_value() if hasattr(v, "get_value") else v.value


def _is_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_str(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _path_str(path) -> str:
  return "/".join(_key_str(k) for k in path) or "<root>"


def _to_plain(tree):
  """nnx.State -> dict and Variable -> its value, recursively; everything else unchanged."""

  def conv(x):
    if isinstance(x, nnx.Variable):
      return _to_plain(_variable_value(x))
    if isinstance(x, nnx.State):
      return {k: _to_plain(v) for k, v in x.items()}
    return x

  return jax.tree.map(conv, tree, is_leaf=_is_node)


def _flatten(tree) -> list[tuple[str, Any]]:
  return [(_path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _key_impl_name(x) -> str | None:
  try:
    return str(jax.random.key_impl(x))
  except Exception:  # abstract keys
    impl = getattr(getattr(x, "dtype", None), "_impl", None)
    return getattr(impl, "name", None)


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _abstract_leaf(x):
  """Restore target of one leaf: ShapeDtypeStruct with a sharding (keys -> their key data)."""
  if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
    sharding = getattr(x, "sharding", None) or _default_sharding()
    if _is_key(x):
      data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
      return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return x  # numpy arrays and Python scalars restore as such.


def abstract_target(tree, shardings=None):
  """`jax.ShapeDtypeStruct` leaves for `tree` (arrays or abstract values, e.g. from
  `nnx.eval_shape` / `jax.eval_shape`), placed on `shardings` (same structure, e.g. from
  `score_jax.sharding.model_shardings` / `tree_shardings_like`) or, when None, on each
  leaf's own sharding."""

  def leaf(x, sharding):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
      return x  # Python scalars restore as such.
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  if shardings is None:
    return jax.tree.map(lambda x: leaf(x, getattr(x, "sharding", None)), tree)
  return jax.tree.map(leaf, tree, shardings)


# --------------------------------------------------------------------------------------------
# Checkpointer
# --------------------------------------------------------------------------------------------


class _Corrupt(Exception):
  pass


def _short(e: BaseException | None, limit: int = 300) -> str:
  text = f"{type(e).__name__}: {e}"
  text = text.split(" See full TensorStore details")[0].split("[tensorstore_spec=")[0]
  return text if len(text) <= limit else text[:limit] + "..."


class Checkpointer:
  """Thin wrapper around `ocp.CheckpointManager` for the training state.

  Args:
    directory: root directory; one sub-directory per step.
    max_to_keep: keep the newest N steps (None = all). Keep N >= 2 so that a corrupt
      latest step can fall back to the previous one.
    async_save: write in a background thread; `save` returns once the arrays are copied
      to host memory. Call `wait()` before reading the checkpoint or exiting.
    save_interval_steps: `save` without `force` skips steps not multiple of this.
  """

  def __init__(
      self,
      directory: str | os.PathLike,
      *,
      max_to_keep: int | None = 3,
      async_save: bool = False,
      save_interval_steps: int = 1,
  ):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"Checkpointer.max_to_keep={max_to_keep}: must be >= 1 or None")
    self.directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=options,
        item_handlers={
            _STATE: ocp.StandardCheckpointHandler(),
            _METADATA: ocp.JsonCheckpointHandler(),
        },
    )

  # -- saving ----------------------------------------------------------------------------------

  def save(
      self, step: int, state, metadata: Mapping[str, Any] | None = None, force: bool = False
  ) -> bool:
    """Saves `state` (+ JSON-serialisable `metadata`) as `step`; returns whether it saved
    (False when the step is skipped by save_interval_steps or already exists)."""
    step = int(step)
    metadata = dict(metadata or {})
    try:
      json.dumps(metadata)
    except (TypeError, ValueError) as e:
      raise CheckpointError(
          f"checkpoint metadata of step {step} is not JSON-serialisable: " f"{e}"
      ) from e
    plain = _to_plain(state)
    prng_keys: dict[str, str | None] = {}

    def unwrap(path, x):
      if _is_key(x):
        prng_keys[_path_str(path)] = _key_impl_name(x)
        return jax.random.key_data(x)
      return x

    plain = jax.tree_util.tree_map_with_path(unwrap, plain)
    if step in self._manager.all_steps() and not force:
      logger.warning(
          "checkpoint step %d already exists in %s; not overwriting", step, self.directory
      )
      return False
    if step in self._manager.all_steps():  # force: replace the existing step.
      self._manager.wait_until_finished()
      self._manager.delete(step)
    meta = {"format": _FORMAT, "user": metadata, "prng_keys": prng_keys}
    return self._manager.save(
        step,
        args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardSave(plain), _METADATA: ocp.args.JsonSave(meta)}
        ),
        force=force,
    )

  # -- restoring -------------------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, step: int | None = None, target=None) -> tuple[Any, dict]:
    """Returns (state, metadata) of `step` (default: the latest readable one).

    target: a tree like the saved state whose leaves are arrays or ShapeDtypeStructs with
      shardings (where the restored arrays go; the structure, including nnx.State /
      Variables and typed PRNG keys, is rebuilt as in the target). None restores plain
      dicts/lists of arrays on one local device.
    If the latest step cannot be read (e.g. a truncated or deleted file) it is skipped with
    a warning naming it and the previous step is tried. Raises CheckpointError when there is
    no (readable) checkpoint, `step` does not exist, or `target` does not match the saved
    tree (naming the first mismatching key).
    """
    self._manager.wait_until_finished()
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint found in {self.directory}")
    if step is not None:
      step = int(step)
      if step not in steps:
        raise CheckpointError(
            f"checkpoint step {step} not found in {self.directory}; " f"available steps: {steps}"
        )
      try:
        return self._restore_step(step, target)
      except _Corrupt as e:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} is unreadable: " f"{_short(e.__cause__)}"
        ) from e.__cause__
    errors = []
    for s in reversed(steps):
      try:
        return self._restore_step(s, target)
      except _Corrupt as e:
        errors.append(f"step {s}: {_short(e.__cause__)}")
        logger.warning(
            "checkpoint step %d in %s is unreadable (%s); falling back to the " "previous step",
            s,
            self.directory,
            _short(e.__cause__),
        )
    raise CheckpointError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def _restore_step(self, step: int, target):
    try:
      meta = self._manager.restore(
          step, args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()})
      )[_METADATA]
      saved = self._manager.item_metadata(step)[_STATE]
      saved = getattr(saved, "tree", saved)
      if saved is None:
        raise FileNotFoundError(f"no array metadata for item '{_STATE}'")
    except Exception as e:
      raise _Corrupt() from e
    if not isinstance(meta, Mapping) or "user" not in meta:
      meta = {"user": dict(meta or {}), "prng_keys": {}}
    prng_keys = meta.get("prng_keys", {})
    saved_leaves = dict(_flatten(saved))

    if target is None:
      plain_target = jax.tree.map(self._target_from_metadata, saved)
    else:
      plain_target = jax.tree.map(_abstract_leaf, _to_plain(target))
      self._check_target(step, plain_target, saved_leaves)

    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(plain_target)})
      )[_STATE]
    except Exception as e:
      raise _Corrupt() from e

    by_path = dict(_flatten(restored))
    if target is None:

      def rewrap(path, x):
        p = _path_str(path)
        return jax.random.wrap_key_data(x, impl=prng_keys[p]) if p in prng_keys else x

      return jax.tree_util.tree_map_with_path(rewrap, restored), meta["user"]

    # Rebuild the target's structure (Variables, nnx.State, namedtuples, keys).
    leaves = []
    for path, t in _flatten(_to_plain(target)):
      x = by_path[path]
      if _is_key(t):
        x = jax.random.wrap_key_data(x, impl=prng_keys.get(path) or _key_impl_name(t))
      leaves.append(x)
    return jax.tree.unflatten(jax.tree.structure(target), leaves), meta["user"]

  @staticmethod
  def _target_from_metadata(md):
    shape, dtype = getattr(md, "shape", None), getattr(md, "dtype", None)
    if shape is None or dtype is None:
      return md
    if type(md).__name__ == "ScalarMetadata":
      return np.dtype(dtype).type(0).item()
    return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype), sharding=_default_sharding())

  def _check_target(self, step: int, plain_target, saved_leaves: dict[str, Any]) -> None:
    target_leaves = dict(_flatten(plain_target))
    where = f"checkpoint step {step} in {self.directory}"
    missing = [k for k in target_leaves if k not in saved_leaves]
    if missing:
      raise CheckpointError(
          f"restore target key '{missing[0]}' is not in {where} "
          f"({len(missing)} missing; checkpoint has e.g. "
          f"{sorted(saved_leaves)[:5]})"
      )
    extra = [k for k in saved_leaves if k not in target_leaves]
    if extra:
      raise CheckpointError(
          f"{where} has key '{extra[0]}' that the restore target lacks " f"({len(extra)} extra)"
      )
    for k, t in target_leaves.items():
      s = saved_leaves[k]
      t_shape = tuple(np.shape(t)) if not hasattr(t, "shape") else tuple(t.shape)
      s_shape = tuple(getattr(s, "shape", ()) or ())
      if t_shape != s_shape:
        raise CheckpointError(
            f"key '{k}': {where} has shape {s_shape} " f"but the restore target has shape {t_shape}"
        )

  # -- lifecycle -------------------------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are written."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

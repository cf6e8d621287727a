"""The weight-import loop shared by the Hugging Face and GGUF importers.

Each format supplies only its name map (our parameter path -> (tensor name, stored shape,
stored array -> our array)) and a tensor reader; walking the parameters, the shape
checks, the cast to `param_dtype` and the placement into the nnx state happen here.
"""

from __future__ import annotations

from typing import Callable, Collection, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_jax.checkpoints.errors import CheckpointError
from score_jax.model.config import ModelConfig
from score_jax.model.transformer import Transformer, abstract_model

# Our param path -> (tensor name in the file, its stored shape, stored array -> our array).
Sources = Mapping[tuple, tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]
# (tensor name, expected stored shape, our param path) -> the stored array; raises
# CheckpointError for a missing or mis-shaped tensor.
Reader = Callable[[str, tuple[int, ...], tuple], np.ndarray]


def import_params(
    cfg: ModelConfig,
    sources: Sources,
    read: Reader,
    names: Collection[str],
    *,
    where: str,
    fmt: str,
    container: str,
    strict: bool,
    ignorable: Callable[[str], bool] = lambda name: False,
) -> Transformer:
  """The model of `cfg` with every parameter read through `sources` and `read`.

  Args:
    names: every tensor name in the file, for the `strict` check.
    where: the path error messages start with.
    fmt: the format's name in the importer-bug message ("HF", "GGUF").
    container: what the unused-tensor message says holds them ("checkpoint", "GGUF").
    strict: raise if a tensor in `names` is neither read nor `ignorable`.
  """
  pdt = jnp.dtype(cfg.param_dtype)
  graphdef, state = nnx.split(abstract_model(cfg))
  used: set[str] = set()
  for key, var in nnx.to_flat_state(state):
    key = tuple(key)
    if key not in sources:  # pragma: no cover - mapping bug guard
      raise CheckpointError(f"{where}: no {fmt} source known for parameter {key} (importer bug)")
    name, shape, fn = sources[key]
    arr = fn(read(name, shape, key))
    used.add(name)
    want = var.get_value().shape
    if tuple(arr.shape) != tuple(want):  # pragma: no cover - mapping bug guard
      raise CheckpointError(f"{where}: {name} maps to shape {arr.shape}, parameter {key} is {want}")
    # device_put copies once; jnp.asarray would stage a second host copy (670 MB embedding).
    var.set_value(jax.device_put(np.asarray(arr, dtype=pdt)))
    del arr
  if strict:
    unused = sorted(n for n in names if n not in used and not ignorable(n))
    if unused:
      shown = ", ".join(unused[:8]) + (f" ... ({len(unused)} in all)" if len(unused) > 8 else "")
      raise CheckpointError(
          f"{where}: {container} has tensors this importer does not use "
          f"({shown}); unsupported feature? pass strict=False to ignore"
      )
  return nnx.merge(graphdef, state)

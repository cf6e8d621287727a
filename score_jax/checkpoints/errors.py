"""Errors shared by the checkpoint importers (Hugging Face, GGUF, orbax)."""


class CheckpointError(ValueError):
  """A checkpoint cannot be imported: missing/corrupt files, missing or mis-shaped tensors,
  unsupported architecture. The message names the offending file, tensor or field."""

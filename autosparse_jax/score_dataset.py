"""The surviving-score dataset of an IRP run, as a TFDS dataset (array_record, no TensorFlow).

One example = one slice of up to CHUNK weights of one layer (one example per
weight would write at ~30k weights/s): theta_0, g_0, the survival count (rounds
survived, 0..N), the score (count min-max normalised to [0, 1] over the whole
dataset), the layer index, the slice's offset in the flattened layer and its
valid length (the last slice of a layer is zero-padded). The metadata records
what produced it (model, dataset, criterion, rounds, schedule, seed, g_0
reduction, layer names and shapes).

    builder = tfds.builder_from_directory(score_dataset_dir)   # also works
    arrays, meta = load_score_dataset(score_dataset_dir)      # flat arrays, exact
"""
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from autosparse_jax.artefacts import DamagedFile
from autosparse_jax.data.builders import QuietBuilder
from autosparse_jax.errors import ConfigError

CHUNK = 16384
NAME = "autosparse_scores"
VERSION = "1.0.0"
FIELDS = ("theta0", "g0", "survival", "score")


class AutosparseScores(QuietBuilder, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Written from arrays in memory (see export_score_dataset)."""
  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {"1.0.0": "Surviving scores of iterative rewind pruning (autosparse_jax)."}

  def __init__(self, *, layers=None, metadata=None, **kwargs):
    self._layers = layers or []
    self._metadata = metadata or {}
    super().__init__(**kwargs)

  def _info(self):
    # Raw bytes: ~10x faster to write than a per-value float_list.
    vector = lambda dtype: tfds.features.Tensor(shape=(CHUNK,), dtype=dtype,
                                                encoding=tfds.features.Encoding.BYTES)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Per-weight theta_0, g_0 and surviving score of an IRP run, in layer slices.",
        features=tfds.features.FeaturesDict({
            "theta0": vector(np.float32), "g0": vector(np.float32),
            "survival": vector(np.int32), "score": vector(np.float32),
            "layer": tfds.features.Tensor(shape=(), dtype=np.int32),
            "offset": tfds.features.Tensor(shape=(), dtype=np.int64),
            "length": tfds.features.Tensor(shape=(), dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(self._metadata),
        disable_shuffling=True,  # Examples stay in layer order.

    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for index, layer in enumerate(self._layers):
      n = layer["theta0"].size
      for offset in range(0, n, CHUNK):
        length = min(CHUNK, n - offset)
        example = {"layer": np.int32(index), "offset": np.int64(offset), "length": np.int32(length)}
        for field in FIELDS:
          piece = np.zeros(CHUNK, layer[field].dtype)
          piece[:length] = layer[field][offset:offset + length]
          example[field] = piece
        yield f"{index}_{offset}", example


def dataset_dir(data_dir):
  return os.path.join(data_dir, NAME, VERSION)


def normalised_scores(survival):
  """Min-max normalisation of survival counts to [0, 1] over the whole dataset."""
  flat = np.concatenate([np.asarray(s).reshape(-1) for s in survival]).astype(np.float64)
  low, high = flat.min(), flat.max()
  span = high - low if high > low else 1.0
  return [((np.asarray(s) - low) / span).astype(np.float32) for s in survival]


def export_score_dataset(data_dir, names, theta0, g0, survival, metadata):
  """Writes the dataset under data_dir; returns its directory (for tfds.builder_from_directory).

  names / theta0 / g0 / survival: one entry per prunable layer (arrays of the
  layer's shape). Refuses to write into an existing dataset version.
  """
  target = dataset_dir(data_dir)
  if os.path.exists(target):
    raise ConfigError(f"{target} already holds a score dataset; not overwriting it. "
                      "Export to another directory, or move the existing one away first.")
  scores = normalised_scores(survival)
  layers = [{"theta0": np.asarray(t, np.float32).reshape(-1), "g0": np.asarray(g, np.float32).reshape(-1),
             "survival": np.asarray(s, np.int32).reshape(-1), "score": sc.reshape(-1)}
            for t, g, s, sc in zip(theta0, g0, survival, scores)]
  meta = dict(metadata)
  meta["layers"] = [{"name": n, "shape": list(np.shape(t))} for n, t in zip(names, theta0)]
  meta["num_weights"] = int(sum(layer["theta0"].size for layer in layers))
  meta["chunk"] = CHUNK
  tfds.display_progress_bar(False)
  builder = AutosparseScores(layers=layers, metadata={"autosparse": json.dumps(meta, sort_keys=True)},
                             data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return str(builder.data_dir)


REEXPORT_FIX = ("Run the IRP job that wrote it again in a new --workdir (or with --restart) to export it anew, "
                "or pass another IRP job's score_dataset_dir.")
META_FIELDS = {"layers": list}  # What loading needs (model, dataset, seed: for messages only).


def _opened(directory):
  """(TFDS builder, metadata) of a score dataset; DamagedFile naming what in it is unreadable."""
  try:
    builder = tfds.builder_from_directory(directory)
    text = builder.info.metadata["autosparse"]
  except Exception as e:  # noqa: BLE001  (TFDS raises many types for damaged dataset_info/features files)
    raise DamagedFile(f"score dataset {directory} is damaged: its TFDS description cannot be read "
                      f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); nothing was changed. "
                      f"{REEXPORT_FIX}") from None
  try:
    meta = json.loads(text)
  except (TypeError, json.JSONDecodeError) as e:
    raise DamagedFile(f"score dataset {directory} is damaged: its metadata is not valid JSON ({e}); nothing was "
                      f"changed. {REEXPORT_FIX}") from None
  for field, kind in META_FIELDS.items():
    if not isinstance(meta.get(field), kind):
      raise DamagedFile(f"score dataset {directory} has no valid metadata field {field!r} (written by another "
                        f"version, or damaged); nothing was changed. {REEXPORT_FIX}")
  return builder, meta


def read_metadata(directory):
  return _opened(directory)[1]


def check_score_dataset(directory, field=None):
  """Clear error unless `directory` holds a score dataset (cheap: no data read)."""
  if not os.path.exists(os.path.join(directory, "dataset_info.json")):
    where = f"{field} contains {directory!r}, which" if field else f"{directory}"
    raise ConfigError(f"{where} is not a score dataset (no dataset_info.json): pass the "
                      "directory an IRP job reported as score_dataset_dir.")


def load_score_dataset(directory):
  """({'names', 'theta0', 'g0', 'survival', 'score', 'layer'}: flat arrays in export order, metadata).

  The per-layer arrays are also returned under 'by_layer' in their original shapes.
  """
  check_score_dataset(directory)
  builder, meta = _opened(directory)
  layers = meta["layers"]
  by_layer = [{f: np.zeros(int(np.prod(layer["shape"])), dt) for f, dt in
               zip(FIELDS, (np.float32, np.float32, np.int32, np.float32))} for layer in layers]
  filled = [0] * len(layers)
  try:
    source = builder.as_data_source(split="train")
    for i in range(len(source)):
      ex = source[i]
      index, offset, length = int(ex["layer"]), int(ex["offset"]), int(ex["length"])
      for f in FIELDS:
        by_layer[index][f][offset:offset + length] = np.asarray(ex[f])[:length]
      filled[index] += length
  except Exception as e:  # noqa: BLE001  (array_record / TFDS errors of a truncated or foreign file)
    raise DamagedFile(f"score dataset {directory} is damaged: its records cannot be read ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:200]}); nothing was changed. {REEXPORT_FIX}") from None
  for layer, count in zip(layers, filled):
    if count != int(np.prod(layer["shape"])):
      raise DamagedFile(f"score dataset {directory}: layer {layer['name']} has {count} of "
                        f"{int(np.prod(layer['shape']))} weights: the dataset is incomplete. {REEXPORT_FIX}")
  flat = {f: np.concatenate([d[f] for d in by_layer]) for f in FIELDS}
  flat["layer"] = np.concatenate([np.full(d["theta0"].size, i, np.int32) for i, d in enumerate(by_layer)])
  flat["names"] = [layer["name"] for layer in layers]
  flat["by_layer"] = [{f: d[f].reshape(layer["shape"]) for f in FIELDS} for d, layer in zip(by_layer, layers)]
  return flat, meta

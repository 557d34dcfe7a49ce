"""The `autos_train` job: learn surviving scores from (theta_0, g_0) of IRP score datasets.

One sample = one weight. Several datasets are merged (paper Table 6). A
held-out split (config.scorer.holdout_fraction of the weights, drawn from the
seed) is never trained on (the original's validation set was inside its
training set). Features are standardised with training-split statistics,
which are saved with the scorer. MSE loss, Adam, one lax.scan per epoch, Orbax
checkpoint after every epoch (resume by running the same command again); a finished
run keeps the scorer and its last checkpoint only.
results.json gives `scorer_dir`; a PNG shows predicted vs true scores over
(theta_0, g_0) on the held-out weights (paper Figures 4 and 5).
"""
import os
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from typing import Any

from autosparse_jax import artefacts, keys
from autosparse_jax.autos.apply import FEATURES, save_scorer
from autosparse_jax.autos.scorer import BACKBONES, make_scorer
from autosparse_jax.lab import preemption
from autosparse_jax.lab.checkpoints import Checkpoints
from autosparse_jax import console
from autosparse_jax.console import log
from autosparse_jax.models import DTYPES
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message
from autosparse_jax.score_dataset import load_score_dataset
from autosparse_jax.lab.workdir import Workdir



@flax.struct.dataclass
class ScorerState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array


def validate(config):
  settings = config.scorer
  if not list(settings.datasets):
    raise ConfigError("config.scorer.datasets is empty: give the score_dataset_dir of one or more IRP "
                      "runs, e.g. --config.scorer.datasets='(\"/runs/irp/scores/seed_0/autosparse_scores/1.0.0\",)'.")
  if settings.backbone not in BACKBONES:
    raise ConfigError(unknown_name_message("config.scorer.backbone", settings.backbone, BACKBONES))
  for f in settings.features:
    if f not in FEATURES:
      raise ConfigError(unknown_name_message("config.scorer.features", f, FEATURES))
  if config.dtype not in DTYPES:
    raise ConfigError(unknown_name_message("config.dtype", config.dtype, tuple(DTYPES)))
  if not 0.0 < float(settings.holdout_fraction) < 1.0:
    raise ConfigError(f"config.scorer.holdout_fraction={settings.holdout_fraction} must be in (0, 1).")
  if int(config.train.epochs) < 1 or int(config.train.batch_size) < 2:
    raise ConfigError(f"config.train.epochs={config.train.epochs} must be >= 1 and "
                      f"config.train.batch_size={config.train.batch_size} >= 2 (BatchNorm).")


def load_merged(dirs, features):
  """(x [N, F] float32, y [N] float32, metadata list) over all datasets."""
  xs, ys, metas = [], [], []
  for d in dirs:
    arrays, meta = load_score_dataset(d)
    xs.append(np.stack([arrays[f] for f in features], axis=1).astype(np.float32))
    ys.append(arrays["score"].astype(np.float32))
    metas.append(meta)
  reductions = {m.get("g0_reduction") for m in metas}
  if "g0" in features and len(reductions) > 1:
    raise ConfigError(f"config.scorer.datasets mix g_0 reductions {sorted(map(str, reductions))}: "
                      "merge datasets whose g_0 was accumulated the same way.")
  return np.concatenate(xs), np.concatenate(ys), metas


def split(n, fraction, seed):
  perm = keys.holdout_rng(seed).permutation(n)
  held = max(1, int(round(n * fraction)))
  return np.sort(perm[held:]), np.sort(perm[:held])


def run(config, workdir_path):
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  start = time.time()
  settings = config.scorer
  features = tuple(settings.features)
  x, y, metas = load_merged(list(settings.datasets), features)
  train_idx, held_idx = split(len(y), float(settings.holdout_fraction), int(config.seed))
  mean, std = x[train_idx].mean(0), x[train_idx].std(0) + 1e-12
  xn = (x - mean) / std
  batch = min(int(config.train.batch_size), len(train_idx))
  steps = len(train_idx) // batch
  module = make_scorer(settings.backbone, len(features), float(settings.width), DTYPES[config.dtype])
  tx = optax.adam(float(config.train.lr))
  key = keys.scorer_key(config.seed)
  # One compiled program (eager init would compile each of its ~200 small ops).
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((2, len(features))), train=False))(keys.init_key(key))
  state = ScorerState(variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"]),
                      jnp.zeros((), jnp.int32))
  x_train, y_train = jnp.asarray(xn[train_idx]), jnp.asarray(y[train_idx])
  x_held, y_held = xn[held_idx], y[held_idx]

  def loss_fn(params, batch_stats, xb, yb):
    pred, updates = module.apply({"params": params, "batch_stats": batch_stats}, xb, train=True,
                                 mutable=["batch_stats"])
    return jnp.mean((pred - yb) ** 2), updates["batch_stats"]

  def step_fn(state, idx):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, x_train[idx], y_train[idx])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return ScorerState(optax.apply_updates(state.params, updates), stats, opt_state, state.step + 1), loss

  @jax.jit
  def epoch_fn(state, epoch):
    perm = jax.random.permutation(keys.epoch_key(key, epoch), len(train_idx))
    state, losses = jax.lax.scan(step_fn, state, perm[:steps * batch].reshape(steps, batch))
    return state, jnp.mean(losses)

  predict = jax.jit(lambda s, xb: module.apply({"params": s.params, "batch_stats": s.batch_stats}, xb,
                                               train=False))

  def held_out_predictions(state):
    out = [np.asarray(predict(state, jnp.asarray(x_held[i:i + 8192]))) for i in range(0, len(x_held), 8192)]
    return np.concatenate(out)

  ckpt_dir = os.path.join(workdir.path, "checkpoints")
  resuming = os.path.isdir(ckpt_dir) and any(os.scandir(ckpt_dir))
  workdir.start(resuming=resuming)
  checkpoints = Checkpoints(ckpt_dir, 2)
  meta = {"epoch": 0, "history": []}
  if resuming:
    restored = checkpoints.restore_latest(state)
    if restored is not None:
      state, meta = restored
      log(f"resuming from epoch {meta['epoch']}")
  epochs = int(config.train.epochs)
  log(f"autos_train: {settings.backbone} scorer ({config.dtype}) on {len(train_idx)} weights from {len(metas)} "
      f"dataset(s), {len(held_idx)} held out; features {features}; {epochs} epochs of {steps} steps")
  bar = console.bar("autos_train: scorer epochs", epochs, int(meta["epoch"]))  # A terminal's bar, else lines.
  for epoch in range(int(meta["epoch"]), epochs):
    t = time.time()
    state, train_loss = epoch_fn(state, epoch)
    held_loss = float(np.mean((held_out_predictions(state) - y_held) ** 2))
    record = {"epoch": epoch + 1, "train_loss": float(train_loss), "held_out_loss": held_loss,
              "epoch_seconds": time.time() - t}
    if not np.isfinite(record["train_loss"]):
      raise NumericalError(f"autos_train: non-finite training loss in epoch {epoch + 1}; "
                               "lower config.train.lr.")
    workdir.log_metrics(record)
    console.advance(bar, epoch + 1, f"held-out MSE {held_loss:.5f}")
    if bar is None:
      log(f"epoch {epoch + 1}/{epochs}  train MSE {record['train_loss']:.5f}  held-out MSE {held_loss:.5f}  "
          f"{record['epoch_seconds']:.1f} s")
    meta = {"epoch": epoch + 1, "history": meta["history"] + [record]}
    checkpoints.save(state, meta)
    if epoch + 1 < epochs and preemption.requested():  # Stopped (preempted, Ctrl-C) after the epoch's checkpoint.
      checkpoints.close()
      raise preemption.Preempted(int(state.step), f"epoch {epoch + 1} of {epochs} (scorer training)")
  console.done(bar)
  predictions = held_out_predictions(state)
  scorer_dir = os.path.join(workdir.path, "scorer")
  info = {"backbone": settings.backbone, "width": float(settings.width), "features": list(features),
          "dtype": config.dtype, "g0_reduction": metas[0].get("g0_reduction"),
          "trained_on": [{k: m.get(k) for k in ("model", "dataset", "criterion", "rounds", "seed")}
                         for m in metas]}
  save_scorer(scorer_dir, info, {"params": state.params, "batch_stats": state.batch_stats}, mean, std)
  checkpoints.keep_latest_only()  # The scorer is saved: of the checkpoints only the last stays.
  checkpoints.close()
  figure = os.path.join(workdir.path, "scorer_predictions.png")
  if workdir.is_writer:
    plot_predictions(figure, x[held_idx], y_held, predictions, features)
  results = {"job": "autos_train", "scorer_dir": scorer_dir, "figure": figure,
             "held_out_mse": float(np.mean((predictions - y_held) ** 2)),
             "held_out_variance": float(np.var(y_held)), "train_weights": int(len(train_idx)),
             "held_out_weights": int(len(held_idx)), "history": meta["history"],
             "datasets": list(settings.datasets), "wall_seconds_this_run": time.time() - start}
  workdir.write_results(results)
  log(f"scorer in {scorer_dir}; held-out MSE {results['held_out_mse']:.5f} "
      f"(variance of the scores {results['held_out_variance']:.5f})")
  return results


def plot_predictions(path, x, y, pred, features, max_points=20000):
  """Predicted vs true score over the input features (paper Figures 4-5)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  mse, variance = float(np.mean((pred - y) ** 2)), float(np.var(y))  # Over every held-out weight.
  r2 = 1.0 - mse / variance if variance > 0 else float("nan")
  pick = np.random.default_rng(0).permutation(len(y))[:max_points]
  x, y, pred = x[pick], y[pick], pred[pick]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  u = x[:, 0]
  v = x[:, 1] if x.shape[1] > 1 else np.zeros_like(u)
  for ax, values, title in ((axes[0], y, "true surviving score"), (axes[1], pred, "AutoS prediction")):
    im = ax.scatter(u, v, c=values, s=2, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel(features[0])
    ax.set_ylabel(features[1] if len(features) > 1 else "")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
  axes[2].scatter(y, pred, s=2, alpha=0.3)
  axes[2].plot([0, 1], [0, 1], "k--", lw=1)
  axes[2].set_xlabel("true score")
  axes[2].set_ylabel("predicted score")
  axes[2].set_title(f"held-out weights: MSE {mse:.4f}, R² {r2:.3f} (score variance {variance:.4f})", fontsize=10)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=100)
  plt.close(fig)

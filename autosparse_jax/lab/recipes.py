"""The config fields every job shares, and the paper's training recipes.

Field meanings (the same in every job that has them):
  model, width         network name; width scales channel counts (1.0 = paper).
  dtype                compute dtype: float32 | bfloat16 (params and optimizer state stay f32).
  conv                 conv nets' convolution: auto | xla | im2col (models/conv.py).
  dataset, data.*      dataset name; data.data_dir = TFDS data dir ('' = $TFDS_DATA_DIR
                       or ~/tensorflow_datasets).
  seed, num_seeds      seeds seed..seed+num_seeds-1, trained vmapped in one program.
  train_seed           -1, or T: theta_0 from the seed, data order / pruning keys from T.
  train.*              epochs, batch_size, optimizer (sgd|adam), lr, momentum, nesterov,
                       weight_decay (coupled, PyTorch-style), lr_drop_epochs/factor,
                       log_every_steps, loop (how an epoch is driven: training.LOOPS).
  criterion, sparsity  pruning criterion ('none' = dense: the train job's only) and fraction
                       of prunable weights removed; sparsities (prune and sweep jobs): several,
                       each pruned to at init and trained.
  prune.*              prunable (regex over param paths), distribution (global|layerwise|erk),
                       min_per_layer (keep >= this many weights per layer), pruning data
                       (batch_size, num_batches, grad_reduction), GraSP samples/temperature,
                       rounds and round_schedule of iterative pruning at init.
  mesh.*               seeds, data: the device mesh (seed groups x data parallelism);
                       data=-1 = all devices. batch_size must divide by mesh.data.
                       shard_train_set: training images split over the devices.
  distributed.*        initialize (auto|yes|no: jax.distributed for several processes),
                       timeout_s (how long processes wait for each other at start).
"""
import ml_collections

from autosparse_jax import criteria, dynamic_sparsity, structure as structure_lib
from autosparse_jax.errors import ConfigError, unknown_name_message
from autosparse_jax.masks import DEFAULT_PRUNABLE

# Paper Appendix A/C (REFERENCE.md). SGD recipes use Nesterov momentum as the original code.
RECIPES = {
    "lenet_mnist": dict(model="lenet_300_100", dataset="mnist", train=dict(
        epochs=100, batch_size=128, optimizer="adam", lr=1.2e-3, lr_drop_factor=0.2,
        lr_drop_epochs=(60, 120), weight_decay=5e-4)),
    "resnet18_cifar10": dict(model="resnet18", dataset="cifar10", train=dict(
        epochs=160, batch_size=128, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True,
        lr_drop_factor=0.2, lr_drop_epochs=(60, 120), weight_decay=5e-4)),
    "vgg16_cifar10": dict(model="vgg16", dataset="cifar10", train=dict(
        epochs=160, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        lr_drop_factor=0.1, lr_drop_epochs=(60, 120), weight_decay=1e-4)),
    "vgg19_cifar100": dict(model="vgg19", dataset="cifar100", train=dict(
        epochs=160, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        lr_drop_factor=0.1, lr_drop_epochs=(60, 120), weight_decay=1e-4)),
    # The paper's table says "SGD" only; momentum 0.9 (Nesterov) as in the other recipes.
    "resnet18_tiny_imagenet": dict(model="resnet18", dataset="tiny_imagenet", train=dict(
        epochs=300, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        lr_drop_factor=0.1, lr_drop_epochs=(150, 225), weight_decay=1e-4)),
    # Embedded real data (scikit-learn digits): runs anywhere in seconds, no download.
    "lenet_digits": dict(model="lenet_300_100", dataset="digits", train=dict(
        epochs=30, batch_size=64, optimizer="adam", lr=1.2e-3, lr_drop_factor=0.2,
        lr_drop_epochs=(20,), weight_decay=5e-4)),
}


def base_config():
  c = ml_collections.ConfigDict()
  c.job = "train"
  # Modules imported before validation: where a user registers criteria
  # (autosparse_jax.register_criterion), e.g. ("my_package.criteria",).
  c.imports = ()
  c.model = "lenet_300_100"
  c.width = 1.0
  # Compute dtype (models.DTYPES): bfloat16 runs the forward and backward passes in bf16;
  # params, optimizer state, BatchNorm statistics, the loss and pruning scores stay float32.
  c.dtype = "float32"
  # How the conv nets convolve (models/conv.py): auto = im2col + matmul for the small maps where
  # XLA:CPU's conv is slow and BatchNorm statistics as matvecs (VGG-16 steps 5.4x faster), XLA's
  # conv elsewhere and everything as before on GPUs.
  c.conv = "auto"
  c.dataset = "mnist"
  c.data = ml_collections.ConfigDict(dict(
      data_dir="", eval_batch_size=1000,
      # Only for dataset='synthetic' (tests, benchmarks).
      synthetic=dict(image_shape=(8, 8, 1), num_classes=10, num_train=512, num_test=256, seed=0)))
  c.seed = 0
  c.num_seeds = 1
  c.train_seed = -1  # >= 0: theta_0 from `seed`, everything else from train_seed (keys.run_keys).
  c.train = ml_collections.ConfigDict(dict(
      epochs=1, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
      weight_decay=0.0, lr_drop_epochs=(), lr_drop_factor=0.1,
      log_every_steps=0,  # 0 = log once per epoch.
      loop="auto"))  # scan | python | auto (see training.LOOPS).
  c.criterion = "none"
  c.sparsity = 0.0
  # What prune_spec.PruneSpec reads besides the criterion's options. prunable: 'default' =
  # masks.default_prunable (weight matrices and conv kernels, never biases, norms or embeddings).
  c.prune = ml_collections.ConfigDict(dict(
      prunable=DEFAULT_PRUNABLE, distribution="global", min_per_layer=0,
      rounds=0,  # 0 = the criterion's default (SynFlow 100, others 1); R > 1 with snip = SNIP-it
      round_schedule="exponential",
      # Frankle et al.'s sanity checks (pruning.ABLATIONS): none | shuffle_layerwise | reinit | invert.
      ablation="none",
      # Sparsity structure (structure.py): unstructured | N:M (2:4, 1:4: sparsity must be 1 - N/M) |
      # block:RxC | channel; a group's score from its members' scores: sum | mean | max.
      structure="unstructured", group_reduce="sum",
      # N:M: ["REGEX=LAYOUT", ...] for kernels the rules cannot see (structure.KERNEL_LAYOUTS); a layer that
      # cannot take the structure: refuse (an error naming the prunable= regex that leaves it dense) | dense
      # (left dense as NVIDIA's ASP does, listed in the results' dense_layers).
      kernel_layout=list(structure_lib.DEFAULT_KERNEL_LAYOUT),
      structure_fallback=structure_lib.DEFAULT_STRUCTURE_FALLBACK))
  # The `autos` criterion's scorer (the results.json scorer_dir of an autos_train job) and the
  # `survival` criterion's IRP score datasets.
  c.autos = ml_collections.ConfigDict()
  c.survival = ml_collections.ConfigDict()
  # Every criterion's options, with the defaults its record declares (criteria/options.py):
  # pruning data (batch_size, num_batches, grad_reduction), GraSP, NPB (npb_*), PX, NTK-SAP,
  # ProsPr, FORCE in config.prune; the scorer in config.autos; score datasets in config.survival.
  for path, (_, field) in criteria.option_fields().items():
    group, name = path.split(".")
    c[group][name] = field.default
  # Devices and processes (sharding.py, distributed.py): seeds x data devices; data=-1 takes
  # all devices (/ seeds). One device in the mesh = the plain single-device programs.
  # shard_train_set: each device stores only its block of the training images (not a copy).
  c.mesh = ml_collections.ConfigDict(dict(seeds=1, data=-1, shard_train_set=False))
  c.distributed = ml_collections.ConfigDict(dict(initialize="auto", timeout_s=300))
  # Long jobs (checkpoints.RunCheckpoints, preemption.py): mid-run checkpoints at epoch ends and
  # every checkpoint_every_steps steps (0: epoch ends only), at most one per
  # checkpoint_min_seconds; preemption_signal stops a job at its next chunk with a checkpoint.
  c.checkpoint_every_steps = 0
  c.checkpoint_min_seconds = 60.0
  c.preemption_signal = "TERM"
  c.tensorboard = True  # TensorBoard event files in WORKDIR/tensorboard beside metrics.jsonl.
  # One writer per workdir (an OS lock on WORKDIR/.lock). On a filesystem without working locks
  # (some NFS): refuse (default: two writers would silently corrupt the run) | warn (run unlocked).
  c.workdir_lock = "refuse"
  # The prune job's trained networks under their masks, one file per seed in WORKDIR/export/:
  # '' (none) | bitmask | nm (N:M masks: the 2:4 layout) | bcoo (compact_export.py).
  c.export = ""
  # Masks that change while training (dynamic_sparsity.py; the prune and sweep jobs): method static |
  # gmp | set | rigl and the records' fields, their defaults read from the records (-1: not given:
  # the record's default; start/end as steps or as fractions of the run). GMP prunes to
  # config.sparsity from dense (criterion 'none') or from the criterion's masks at initial_sparsity.
  c.sparse_training = ml_collections.ConfigDict(dynamic_sparsity.config_defaults())
  return c


def recipe_config(name):
  """base_config() with recipe `name` applied."""
  if name not in RECIPES:
    raise ConfigError(unknown_name_message("config argument (recipe)", name, tuple(RECIPES)))
  c = base_config()
  recipe = RECIPES[name]
  c.model, c.dataset = recipe["model"], recipe["dataset"]
  c.train.update(recipe["train"])
  return c

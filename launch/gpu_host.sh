#!/usr/bin/env bash
# Runs one job on a single GPU host: one process, all its GPUs (see launch/README.md).
#   launch/gpu_host.sh --config=configs/train.py:resnet18_cifar10 --workdir=/scratch/rn18 [--config.x=y]
# With several GPUs the batch is split over all of them (config.mesh.data=-1, the default;
# config.train.batch_size must divide by the GPU count); --config.mesh.data=1 uses one GPU,
# or run one job per GPU: CUDA_VISIBLE_DEVICES=0 launch/gpu_host.sh ... & CUDA_VISIBLE_DEVICES=1 ...
# First time on the host:
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -r requirements-gpu.txt \
#     && .venv/bin/pip install --no-deps -e .
set -euo pipefail
cd "$(dirname "$0")/.."
# Let XLA take 90% of GPU memory up front (default 75%): fewer allocator stalls, room for
# vmapped seeds and the replicated training set. Lower it when several jobs share a GPU.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# Several GPUs: let XLA overlap the gradient all-reduce with the backward pass.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
# Datasets prepared with `python -m autosparse_jax.data.prepare NAME ...` live here.
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}"
exec "${PYTHON:-.venv/bin/python}" -m autosparse_jax.lab.main "$@"

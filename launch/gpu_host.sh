#!/usr/bin/env bash
# Runs one job on a single GPU host.
#   launch/gpu_host.sh --config=configs/train.py:resnet18_cifar10 --workdir=/scratch/rn18 [--config.x=y]
# First time on the host:
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -r requirements-gpu.txt \
#     && .venv/bin/pip install --no-deps -e .
set -euo pipefail
cd "$(dirname "$0")/.."
# Let XLA take 90% of GPU memory up front (default 75%): fewer allocator stalls, room for vmapped seeds.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
# Datasets prepared with `python -m autosparse_jax.data.prepare NAME ...` live here.
export TFDS_DATA_DIR="${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}"
exec "${PYTHON:-.venv/bin/python}" -m autosparse_jax.main "$@"

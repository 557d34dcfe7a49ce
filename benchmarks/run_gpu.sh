#!/usr/bin/env bash
# The GPU benchmark runs recorded in BENCHMARKS.md, each bounded by a timeout, logs and JSON in OUTDIR.
#   benchmarks/run_gpu.sh OUTDIR [PART...]   PART: train seeds scoring autos sharded (default: all, in that order)
# Needs the package importable (pip install -e . or PYTHONPATH=.); no TFDS data (synthetic / embedded).
set -u -o pipefail
out=${1:?usage: benchmarks/run_gpu.sh OUTDIR [train seeds scoring autos sharded]}; shift
[ $# -gt 0 ] || set -- train seeds scoring autos sharded
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
for part in "$@"; do
  case $part in
    train) limit=${TRAIN_LIMIT:-330}; args=(benchmarks/train_throughput.py --conv_models=resnet18,vgg16
             --dtypes=float32,bfloat16 --resnet_steps=50 --scan_repeats=5) ;;
    seeds) limit=${SEEDS_LIMIT:-120}; args=(benchmarks/seed_identity.py) ;;
    scoring) limit=${SCORING_LIMIT:-240}; args=(benchmarks/scoring_time.py) ;;
    autos) limit=${AUTOS_LIMIT:-330}; args=(benchmarks/autos_scoring.py --batch=4096 --iters=20
             --configs=resnet18:float32,resnet18:bfloat16,vgg19:float32,vgg19:bfloat16,mlp:float32,mlp:bfloat16,mlp:bfloat16:65536,resnet18:bfloat16:16384
             --train_configs=resnet18:float32,resnet18:bfloat16) ;;
    sharded) limit=${SHARDED_LIMIT:-240}; args=(benchmarks/sharded_overhead.py --conv_steps=50
             --lenet_steps=468 --score_weights=16777216 --repeats=5) ;;
    *) echo "unknown part $part (train seeds scoring autos sharded)"; exit 2 ;;
  esac
  echo "== $part: $py ${args[*]} --json=$out/$part.json (timeout ${limit}s) $(date -u +%T)"
  start=$(date +%s)
  timeout "$limit" "$py" "${args[@]}" --json="$out/$part.json" 2>&1 | tee "$out/$part.log"
  echo "== $part: exit $? after $(( $(date +%s) - start )) s"
done

#!/usr/bin/env bash
# The GPU session's one device call: the throughput benchmark, then the CIFAR-10 study's `gpu` profile
# (the paper's ResNet18 and data, 15 epochs, bf16), exported for the chapter "CIFAR-10".
#
# Prepare on the development machine (the device machine carries no dataset):
#   mkdir -p data/device/cifar10-jpeg && cp ../shared/data/cifar10-jpeg/*.tar.gz data/device/cifar10-jpeg/
# Run through the device tool with carry ["data/device"] and a time limit that leaves room for a rerun;
# then, here:  mkdir -p data/trained && tar -xzf <files_at>/trained.tar.gz -C data/trained
#              cp <files_at>/gpu_throughput_*.json benchmarks/results/
# and commit data/trained/cifar10 and the report.  STUDY_MINUTES bounds the study; runs cut short
# resume from their checkpoints on the next call (the cache travels back only as exported results).
set -euo pipefail
export PYTHONUNBUFFERED=1
export NCMSE_DATA_ROOT="$PWD/data/device"
OUT=${OUT:-/tmp/ncmse-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
python3 benchmarks/gpu_throughput.py --device cuda --out "$OUT" 2>&1 | tail -n 40
WORKERS=${WORKERS:-2}          # runs sharing the GPU at once: set from the benchmark's concurrent rows
timeout "$(( ${STUDY_MINUTES:-6} * 60 ))" python3 -m ncmse study --study cifar10 --profile gpu --device cuda \
    --executor local --workers "$WORKERS" --quiet --export "$OUT/trained" 2>&1 | tail -n 20 || echo "study stopped: $?"
if [ -d "$OUT/trained" ]; then
    tar -czf "$OUT/trained.tar.gz" -C "$OUT/trained" . && rm -rf "$OUT/trained"
elif [ -d data/results ]; then      # cut short: bring back the finished runs (python -m ncmse study … --export
    tar -czf "$OUT/results.tar.gz" -C data results    # after unpacking them into data/ reads them from the cache)
fi
ls -la "$OUT"

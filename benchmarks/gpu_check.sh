#!/usr/bin/env bash
# The one GPU command, from the repository root of a fresh copy on a GPU machine:
#   bash benchmarks/gpu_check.sh OUT_DIR
# Installs the project into the machine's own Python without a package index (the image already
# has jax, flax, optax, orbax, pandas, scipy, tokenizers, pytest), then runs
# `python -m research.bench.gpu --out OUT_DIR` (tests, benchmarks, a fitted sweep; under 8 min).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
if ! "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$out/install.txt" 2>&1; then
  echo "gpu_check: pip install failed (see $out/install.txt); using PYTHONPATH=$PWD instead" >&2
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
"$py" -m research.bench.gpu --out "$out" 2>&1 | tee -a "$out/console.txt"

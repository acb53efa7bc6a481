#!/usr/bin/env bash
# The dense-input MNIST workload side by side: horn's `mnist --dense` and the
# PyTorch twin (scripts/torch_mnist_dense.py), in turn, ROUNDS times; prints
# each run's median epoch and the ratio of the medians.
# Usage: scripts/compare_dense.sh [ROUNDS] [EPOCHS]   (ANCHOR_THREADS, default 2;
# PYTHON, default /tmp/horn-bench-venv/bin/python, a venv with torch and numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
EPOCHS=${2:-4}
THREADS=${ANCHOR_THREADS:-2}
PY=${PYTHON:-/tmp/horn-bench-venv/bin/python}
cargo build --release --example mnist >/dev/null 2>&1
med() { "$PY" -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['epoch_median_2_10'])"; }
h=(); t=()
for r in $(seq "$ROUNDS"); do
  a=$(target/release/examples/mnist --dense --epochs "$EPOCHS" --threads "$THREADS" --json | med)
  b=$(ANCHOR_THREADS=$THREADS ANCHOR_EPOCHS=$EPOCHS "$PY" scripts/torch_mnist_dense.py | med)
  echo "round $r: horn $a s/epoch, pytorch $b s/epoch"
  h+=("$a"); t+=("$b")
done
"$PY" - "${h[*]}" "${t[*]}" <<'PYEOF'
import statistics, sys
h = [float(v) for v in sys.argv[1].split()]
t = [float(v) for v in sys.argv[2].split()]
mh, mt = statistics.median(h), statistics.median(t)
print(f"median: horn {mh:.3f} s, pytorch {mt:.3f} s, ratio {mh / mt:.3f}")
PYEOF

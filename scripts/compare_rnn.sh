#!/usr/bin/env bash
# Side-by-side timing of the recurrent reference workload: horn's sequence_bench example against
# ../shared/bench/torch_lstm.py, for LSTM and GRU, alternating runs so that machine drift hits
# both alike. Prints the median epoch time (epochs 2..) of each and the ratios.
#
# Usage: scripts/compare_rnn.sh [ROUNDS]   (default 3; ANCHOR_EPOCHS, default 3, epochs per run)
# Needs the venv of ../shared/bench/compare.sh (BENCH_VENV, default /tmp/horn-bench-venv).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
venv=${BENCH_VENV:-/tmp/horn-bench-venv}
rounds=${1:-3}
epochs=${ANCHOR_EPOCHS:-3}
threads=${BENCH_THREADS:-2}
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q numpy torch >&2
fi
export ANCHOR_THREADS=$threads RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads ANCHOR_EPOCHS=$epochs
(cd "$here" && cargo build -q --release --example sequence_bench)
out=$(mktemp -d)
for ((r = 1; r <= rounds; r++)); do
  for rnn in lstm gru; do
    echo "round $r/$rounds $rnn" >&2
    "$here/target/release/examples/sequence_bench" --rnn $rnn --epochs "$epochs" --json | tail -n 1 >>"$out/horn_$rnn.jsonl"
    RNN=$rnn "$venv/bin/python" "$bench/torch_lstm.py" | tail -n 1 >>"$out/torch_$rnn.jsonl"
  done
done
python3 - "$out" <<'PY'
import json, os, statistics, sys
d = sys.argv[1]
def load(n):
    return [json.loads(l) for l in open(os.path.join(d, n + ".jsonl")) if l.strip()]
print("%-6s %-6s %10s %12s %14s %9s" % ("rnn", "system", "epoch_s", "val_loss", "predict_s", "rss_MiB"))
for rnn in ("lstm", "gru"):
    med = {}
    for sysname in ("horn", "torch"):
        rs = load(f"{sysname}_{rnn}")
        m = lambda k: statistics.median(r[k] for r in rs)
        med[sysname] = m("epoch_median_2_10")
        print("%-6s %-6s %10.3f %12.5f %14.3f %9.1f" % (rnn, sysname, med[sysname], m("val_loss_last"),
              m("predict_b256_s"), m("peak_rss_mib")))
    print("ratio horn/torch %s epoch time: %.3f" % (rnn, med["horn"] / med["torch"]))
PY

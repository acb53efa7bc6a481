#!/usr/bin/env bash
# Runs the safe-API soundness tests under Miri (needs a nightly toolchain with
# the miri component: `rustup +nightly component add miri rust-src`).
# Miri reports no AVX2, so the portable kernel path is what it checks; the
# AVX2 kernel is covered by the release-mode tests instead.
# Tree Borrows: crossbeam-epoch (under rayon) trips a known Stacked Borrows
# false positive. Rayon's global pool outlives main, hence ignore-leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-tree-borrows -Zmiri-ignore-leaks" \
  cargo +nightly miri test --test soundness -- \
  gemm_ dense_ metric_state relu_ to_categorical optimizer_state clip_options

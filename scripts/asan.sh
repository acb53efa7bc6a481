#!/usr/bin/env bash
# The integration tests under AddressSanitizer, with horn's AVX2 kernel (which
# Miri cannot run). Needs a nightly toolchain. allocator_may_return_null lets a
# refused huge allocation fail the way the system allocator does (horn turns it
# into an error) instead of ASan stopping the process on its size.
set -euo pipefail
cd "$(dirname "$0")/.."
ASAN_OPTIONS=allocator_may_return_null=1 RUSTFLAGS="-Zsanitizer=address" \
  CARGO_TARGET_DIR=target/asan \
  cargo +nightly test --target x86_64-unknown-linux-gnu --lib \
  --test soundness --test hostile_files --test fuzz_loaders --test determinism \
  --test weighting --test callbacks --test allocations

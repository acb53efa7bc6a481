#!/usr/bin/env bash
# horn -> Keras round trip: horn writes .keras files (tests/keras_files.rs,
# export_models_for_keras), Keras 3 opens them and predicts the same.
# Usage: scripts/keras_roundtrip.sh [PYTHON]   (default: python3; needs keras, torch, numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
dir=$(mktemp -d)
HORN_KERAS_EXPORT_DIR=$dir cargo test --release --quiet --test keras_files export_models_for_keras >/dev/null
KERAS_BACKEND=${KERAS_BACKEND:-torch} "$py" scripts/keras_roundtrip.py "$dir"

"""Opens horn's `save_keras` files with Keras 3 itself and compares predictions.

    scripts/keras_roundtrip.sh            # writes the files with cargo, then runs this

or by hand:

    HORN_KERAS_EXPORT_DIR=/tmp/horn-keras cargo test --test keras_files export_models_for_keras
    KERAS_BACKEND=torch python scripts/keras_roundtrip.py /tmp/horn-keras

For every `<name>.keras` beside a `<name>.json` (inputs and horn's
predictions) it runs `keras.saving.load_model` (compile settings included),
predicts on the same inputs and prints the largest difference; it exits 1
when one is above 1e-5. Without Keras installed it says so and exits 0.
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
try:
    import keras
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"skipped: Keras is not installed here ({e}); pip install keras torch numpy")
    sys.exit(0)


def arr(d):
    return np.asarray(d["data"], dtype=np.float64).reshape(d["shape"])


def main(directory):
    names = sorted(f[:-6] for f in os.listdir(directory) if f.endswith(".keras"))
    worst = 0.0
    for name in names:
        spec = json.load(open(os.path.join(directory, name + ".json")))
        model = keras.saving.load_model(os.path.join(directory, name + ".keras"))
        xs = [arr(x).astype("float32") for x in spec["inputs"]]
        preds = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        if not isinstance(preds, (list, tuple)):
            preds = [preds]
        diff = max(float(np.max(np.abs(np.asarray(p) - arr(w)))) for p, w in zip(preds, spec["predictions"]))
        worst = max(worst, diff)
        opt = model.optimizer.__class__.__name__ if model.optimizer is not None else "none"
        iters = int(model.optimizer.iterations.numpy()) if model.optimizer is not None else 0
        print(f"{name:12s} {model.__class__.__name__:11s} layers {len(model.layers):2d}  "
              f"optimizer {opt} (iterations {iters})  max |keras - horn| = {diff:.2e}")
    print(f"Keras {keras.__version__} ({keras.backend.backend()}): {len(names)} horn files, worst difference {worst:.2e}")
    return 0 if worst <= 1e-5 and names else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/horn-keras"))

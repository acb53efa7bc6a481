"""Re-runs the `embedding_gru_adam` trajectory of keras-layer-fixtures.json with Keras 3 on its
torch backend, where an Embedding's gradient is a dense tensor, and writes what Keras computed to
tests/fixtures/keras-embedding-gru-dense.json.

Why: the fixture was made with the TensorFlow backend, whose Embedding gradient is a
tf.IndexedSlices. Keras' Adam squares that gradient slice by slice before densifying it, so a token
id that occurs k times in a batch adds the sum of its k squared gradients to Adam's second moment,
not the square of its summed gradient; the other backends (and horn) use the summed gradient. The
two differ only for ids repeated within a batch.

Usage: KERAS_BACKEND=torch python scripts/keras_embedding_gru_dense.py
"""
import json
import os

import keras
import numpy as np

assert keras.backend.backend() == "torch", "run with KERAS_BACKEND=torch"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
d = json.load(open(os.path.join(root, "tests/fixtures/keras-layer-fixtures.json")))
c = d["fit_trajectories"]["embedding_gru_adam"]


def arr(v):
    dt = np.float32 if v.get("dtype", "float") == "float" else np.int32
    return np.array(v["data"], dtype=dt).reshape(v["shape"])


x, y = arr(c["x"]), arr(c["y"])
layers = [getattr(keras.layers, l["class_name"]).from_config(l["config"]) for l in c["layers"]]
model = keras.Sequential([keras.Input(x.shape[1:], dtype="int32")] + layers)
model.set_weights([arr(w["value"]) for w in c["initial_weights"]])
cfg = c["optimizer"]["config"]
model.compile(
    keras.optimizers.Adam(cfg["learning_rate"], cfg["beta_1"], cfg["beta_2"], cfg["epsilon"]),
    c["loss"],
    metrics=["accuracy"],
)
h = model.fit(x, y, epochs=c["epochs"], batch_size=c["batch_size"], shuffle=False, verbose=0)


def out(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


json.dump(
    {
        "generated_by": f"keras {keras.__version__}, torch backend, scripts/keras_embedding_gru_dense.py",
        "history": {k: [float(v) for v in vs] for k, vs in h.history.items()},
        "final_weights": [{"name": w.path, "value": out(w.numpy())} for w in model.weights],
        "predictions": out(model.predict(x, verbose=0)),
    },
    open(os.path.join(root, "tests/fixtures/keras-embedding-gru-dense.json"), "w"),
)
print(h.history)

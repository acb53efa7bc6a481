"""Writes legacy Keras 2 `.h5` model files (what `model.save("m.h5")` wrote in
Keras 2 and R keras) for tests/keras_files.rs, with Keras 2 itself (tf_keras).

    pip install tensorflow tf_keras numpy
    python scripts/keras2_h5_fixture.py
"""
import json
import os

import numpy as np
import tf_keras as keras
from tf_keras import layers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "keras-files")
rng = np.random.default_rng(3)
keras.utils.set_random_seed(3)


def arr(a):
    a = np.asarray(a)
    return {"shape": list(a.shape), "data": a.astype(np.float64).ravel().tolist()}


def save(name, model, xs, ys):
    model.fit(xs, ys, epochs=1, batch_size=4, verbose=0, shuffle=False)
    model.save(os.path.join(OUT, name + ".h5"))
    preds = model.predict(xs, verbose=0)
    preds = preds if isinstance(preds, list) else [preds]
    xs = xs if isinstance(xs, list) else [xs]
    with open(os.path.join(OUT, name + ".h5.json"), "w") as f:
        json.dump({"keras_version": keras.__version__, "inputs": [arr(x) for x in xs],
                   "predictions": [arr(p) for p in preds]}, f)


# A Sequential MLP with an LSTM before it, as R keras users write them.
model = keras.Sequential([
    layers.LSTM(6, input_shape=(5, 3), return_sequences=True),
    layers.GRU(4),
    layers.Dense(8, activation="relu"),
    layers.Dense(2, activation="softmax"),
])
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
x = rng.normal(size=(8, 5, 3)).astype("float32")
y = np.eye(2, dtype="float32")[np.arange(8) % 2]
save("keras2_sequential", model, x, y)

# A functional model: two inputs, Concatenate, two outputs.
a = keras.Input((4,), name="a")
b = keras.Input((3,), name="b")
h = layers.Concatenate()([layers.Dense(5, activation="tanh")(a), b])
c = layers.Dense(3, activation="softmax", name="cls")(h)
v = layers.Dense(1, name="val")(h)
model = keras.Model([a, b], [c, v])
model.compile(optimizer="sgd", loss=["categorical_crossentropy", "mse"])
xa = rng.normal(size=(8, 4)).astype("float32")
xb = rng.normal(size=(8, 3)).astype("float32")
save("keras2_functional", model, [xa, xb], [np.eye(3, dtype="float32")[np.arange(8) % 3], rng.normal(size=(8, 1)).astype("float32")])
print("written to", os.path.abspath(OUT))

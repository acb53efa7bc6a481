"""Writes tests/fixtures/keras-masking.json: what Keras 3 computes for models whose Embedding has
mask_zero=True (recurrent layers carry their state over padded steps, GlobalAveragePooling1D averages
the unpadded steps): initial weights, predictions, and a 2-epoch SGD fit (shuffle off) with its
History and final weights.

Usage: KERAS_BACKEND=tensorflow python scripts/keras_masking_fixture.py
"""
import json
import os

import keras
import numpy as np

keras.utils.set_random_seed(11)
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rng = np.random.default_rng(3)
# 8 sequences of 6 ids in 1..9, with padding zeros in front, at the end and inside.
x = rng.integers(1, 10, size=(8, 6)).astype("int32")
x[0, :2] = 0
x[1, 4:] = 0
x[2, 2] = 0
x[3, :5] = 0
x[5, 0] = 0
x[6, 3:5] = 0


def out(a):
    a = np.asarray(a)
    return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}


def case(name, layers, y, loss):
    inp = keras.Input((6,), dtype="int32")
    h = inp
    for l in layers:
        h = l(h)
    model = keras.Model(inp, h)
    init = [{"name": w.path, "value": out(w.numpy())} for w in model.weights]
    pred = model.predict(x, verbose=0)
    model.compile(keras.optimizers.SGD(0.1), loss)
    hist = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    return {
        "layers": [{"class_name": type(l).__name__, "config": l.get_config()} for l in layers],
        "initial_weights": init,
        "predictions": out(pred),
        "loss": loss,
        "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
        "final_weights": [{"name": w.path, "value": out(w.numpy())} for w in model.weights],
    }


y_class = np.eye(2, dtype="float32")[rng.integers(0, 2, size=8)]
y_value = rng.normal(size=(8, 1)).astype("float32")
fixture = {
    "keras": keras.__version__,
    "x": out(x),
    "y_class": out(y_class),
    "y_value": out(y_value),
    "lstm_gru": case(
        "lstm_gru",
        [
            keras.layers.Embedding(10, 4, mask_zero=True),
            keras.layers.LSTM(5, return_sequences=True),
            keras.layers.GRU(3),
            keras.layers.Dense(2, activation="softmax"),
        ],
        y_class,
        "categorical_crossentropy",
    ),
    "bidirectional_pooling": case(
        "bidirectional_pooling",
        [
            keras.layers.Embedding(10, 4, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.SimpleRNN(3, return_sequences=True)),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ],
        y_value,
        "mse",
    ),
}
with open(os.path.join(root, "tests/fixtures/keras-masking.json"), "w") as f:
    json.dump(fixture, f)
print({k: v["history"] for k, v in fixture.items() if isinstance(v, dict) and "history" in v})

"""Prints the Keras 3 numbers that tests/weighting.rs checks horn against.

Run: KERAS_BACKEND=jax python scripts/keras_weighting_fixture.py
(pip install keras "jax[cpu]"). The model has fixed weights and learning rate
0, so every value below is a pure function of the data, the weights and
Keras' weighting rules: `metrics` unweighted, `weighted_metrics` weighted by
sample_weight (or class_weight; Keras 3 refuses both at once) in training,
validation_split keeping the held-out rows' sample weights, and the same for
evaluate.
"""
import json

import numpy as np
import keras

x = np.array(
    [[0.5, -1.0, 0.25, 2.0], [1.5, 0.5, -0.5, 0.0], [-1.0, 2.0, 1.0, -0.5],
     [0.0, 0.0, 1.5, 1.0], [2.0, -0.5, 0.0, 0.5], [-0.5, 1.0, -1.5, 1.5],
     [1.0, 1.0, 1.0, -1.0], [0.25, -2.0, 0.5, 0.75]], dtype="float32")
labels = np.array([0, 1, 2, 2, 0, 1, 1, 0])
y = np.eye(3, dtype="float32")[labels]
w = np.array([1.0, 2.0, 0.5, 3.0, 1.0, 0.0, 2.5, 1.5], dtype="float32")
kernel = np.array([[0.3, -0.2, 0.1], [-0.4, 0.5, 0.2], [0.1, 0.1, -0.3],
                   [0.2, -0.1, 0.4]], dtype="float32")
bias = np.array([0.05, -0.05, 0.0], dtype="float32")


def model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    m.set_weights([kernel, bias])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
              loss="categorical_crossentropy",
              metrics=["accuracy", "mae"],
              weighted_metrics=["accuracy", "mae"])
    return m


hs = model().fit(x, y, epochs=1, batch_size=3, shuffle=False, validation_split=0.25,
                 sample_weight=w, verbose=0)
hc = model().fit(x, y, epochs=1, batch_size=3, shuffle=False, validation_split=0.25,
                 class_weight={0: 1.0, 1: 2.0, 2: 0.5}, verbose=0)
e = model().evaluate(x, y, sample_weight=w, batch_size=3, return_dict=True, verbose=0)
print(json.dumps({"fit_sample_weight": {k: float(v[0]) for k, v in hs.history.items()},
                  "fit_class_weight": {k: float(v[0]) for k, v in hc.history.items()},
                  "evaluate": {k: float(v) for k, v in e.items()}}, indent=1))

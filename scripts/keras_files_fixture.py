"""Writes the `.keras` fixtures of tests/keras_files.rs with Keras 3 itself.

Each model is saved with `model.save(path)` after a short `fit` (so the
file holds optimizer state), with its test input and Keras' predictions in
`tests/fixtures/keras-files/<name>.json`.

    pip install keras torch numpy
    KERAS_BACKEND=torch python scripts/keras_files_fixture.py
"""
import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "keras-files")
rng = np.random.default_rng(7)
keras.utils.set_random_seed(7)


def arr(a):
    a = np.asarray(a)
    return {"shape": list(a.shape), "data": a.astype(np.float64).ravel().tolist()}


def save(name, model, xs, ys, fit_kwargs):
    """Fits, saves, predicts; then fits one more epoch (from the saved
    optimizer state) and records the History and weights, so that a loader
    can check that training resumes where Keras stopped."""
    model.fit(xs, ys, verbose=0, shuffle=False, **fit_kwargs)
    model.save(os.path.join(OUT, name + ".keras"))
    preds = model.predict(xs, verbose=0)
    if not isinstance(preds, (list, tuple)):
        preds = [preds]
    xs_list = xs if isinstance(xs, (list, tuple)) else [xs]
    ys_list = ys if isinstance(ys, (list, tuple)) else [ys]
    weights = [arr(w.numpy()) for w in model.weights]
    more = dict(fit_kwargs, epochs=1)
    h = model.fit(xs, ys, verbose=0, shuffle=False, **more)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({
            "keras_version": keras.__version__,
            "inputs": [arr(x) for x in xs_list],
            "targets": [arr(y) for y in ys_list],
            "batch_size": fit_kwargs["batch_size"],
            "predictions": [arr(p) for p in preds],
            "weights": [{"path": w.path, "value": v} for w, v in zip(model.weights, weights)],
            "one_more_epoch": {
                "history": {k: [float(x) for x in v] for k, v in h.history.items()},
                "weights": [{"path": w.path, "value": arr(w.numpy())} for w in model.weights],
            },
        }, f)


# 1. Functional: two inputs, a shared layer, merges, two outputs, adam.
a = keras.Input((5,), name="a")
b = keras.Input((5,), name="b")
shared = layers.Dense(4, activation="tanh", name="shared")
sa, sb = shared(a), shared(b)
m = layers.Concatenate(name="concat")([sa, sb, layers.Multiply(name="mul")([sa, sb])])
m = layers.Add(name="add")([layers.Dense(6, name="pa")(m), layers.Dense(6, name="pb")(m)])
c = layers.Dense(3, activation="softmax", name="out_class")(m)
v = layers.Dense(1, name="out_value")(m)
model = keras.Model([a, b], [c, v], name="two_heads")
model.compile(optimizer=keras.optimizers.Adam(0.01), loss=["categorical_crossentropy", "mse"],
              loss_weights=[1.0, 0.5], metrics={"out_class": ["accuracy"], "out_value": ["mae"]})
xa, xb = rng.normal(size=(12, 5)).astype("float32"), rng.normal(size=(12, 5)).astype("float32")
yc = np.eye(3, dtype="float32")[np.arange(12) % 3]
yv = rng.normal(size=(12, 1)).astype("float32")
save("functional", model, [xa, xb], [yc, yv], {"epochs": 2, "batch_size": 4})

# 2. Sequential sequences: Embedding(mask_zero), Bidirectional(LSTM), GRU, LayerNorm, rmsprop.
model = keras.Sequential([
    keras.Input((7,), dtype="int32"),
    layers.Embedding(20, 6, mask_zero=True),
    layers.Bidirectional(layers.LSTM(5, return_sequences=True)),
    layers.GRU(4),
    layers.LayerNormalization(),
    layers.Dense(2, activation="sigmoid"),
], name="text")
model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
ids = rng.integers(1, 20, size=(10, 7)).astype("int32")
ids[:, 5:] = 0
y = (rng.random(size=(10, 2)) > 0.5).astype("float32")
save("sequences", model, ids, y, {"epochs": 2, "batch_size": 5})

# 3. Sequential vision: Conv1D causal, BatchNorm, pooling, SimpleRNN, sgd momentum.
model = keras.Sequential([
    keras.Input((16, 3)),
    layers.Conv1D(8, 3, padding="causal", activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
    layers.BatchNormalization(),
    layers.MaxPooling1D(2),
    layers.SimpleRNN(6, return_sequences=True),
    layers.TimeDistributed(layers.Dense(3)),
    layers.GlobalAveragePooling1D(),
    layers.Dropout(0.3),
    layers.Dense(1),
], name="signals")
model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse", metrics=["mae"])
x = rng.normal(size=(8, 16, 3)).astype("float32")
y = rng.normal(size=(8, 1)).astype("float32")
save("signals", model, x, y, {"epochs": 2, "batch_size": 4})
print("written to", os.path.abspath(OUT))

# 4. Every optimizer's saved state: a small regression, two epochs, then one more.
optimizers = {
    "rmsprop_centered": keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "adam_amsgrad": keras.optimizers.Adam(0.01, amsgrad=True),
    "adamax": keras.optimizers.Adamax(0.01),
    "adadelta": keras.optimizers.Adadelta(1.0),
    "nadam": keras.optimizers.Nadam(0.01),
    "adagrad": keras.optimizers.Adagrad(0.05),
    "lion": keras.optimizers.Lion(0.001),
    "sgd_nesterov": keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adamw": keras.optimizers.AdamW(0.01),
    "adam_schedule": keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.02, 3, 0.5)),
}
x = rng.normal(size=(12, 4)).astype("float32")
y = rng.normal(size=(12, 1)).astype("float32")
for name, opt in optimizers.items():
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="tanh"), layers.Dense(1)], name="opt")
    model.compile(optimizer=opt, loss="mse")
    save("opt_" + name, model, x, y, {"epochs": 2, "batch_size": 4})
print("optimizers written")

#!/usr/bin/env python3
"""Rebuild a horn model file as a Keras 3 model.

    python3 scripts/horn_to_keras.py model.safetensors model.keras [--check preds.safetensors]

A horn model file is a safetensors file: the weights under Keras' names
(`dense/kernel`, `dense/bias`, ...) and the architecture as JSON in the metadata
entry `model` (see `src/saving.rs`). This script reads both with the
`safetensors` package, builds the same `keras.Sequential`, copies the weights in
Keras' order, compiles it with the same optimizer, loss and metrics, and saves a
`.keras` file. Needs `pip install keras safetensors numpy` and any Keras backend
(`KERAS_BACKEND=numpy` is enough to build, save and predict).

With `--check preds.safetensors` (tensors `x` and `probs`: inputs and horn's
predictions for them) it also prints the largest difference between Keras'
predictions on `x` and horn's.
"""

import argparse
import json
import sys

import numpy as np
from safetensors import safe_open

import keras


def activation_layers(act):
    """The Keras activation for a Dense layer, plus any layer that must follow it."""
    name = act["name"]
    if name == "elu":
        alpha = act.get("alpha", 1.0)
        return ("linear", [keras.layers.ELU(alpha=alpha)]) if alpha != 1.0 else ("elu", [])
    if name == "leaky_relu":
        slope = act.get("negative_slope", 0.2)
        return "linear", [keras.layers.LeakyReLU(negative_slope=slope)]
    if name == "gelu" and act.get("approximate"):
        raise SystemExit("approximate GELU has no Keras string name; export the model with exact GELU")
    return name, []


def horn_activation(raw):
    """horn writes activations as {"name": "relu"}, {"name": "elu", "config": 1.0}
    or {"name": "gelu", "config": {"approximate": true}}; normalise to flat dicts."""
    out = {"name": raw["name"]}
    config = raw.get("config")
    if isinstance(config, dict):
        out.update(config)
    elif config is not None:
        out["alpha" if raw["name"] == "elu" else "negative_slope"] = config
    return out


def regularizer(r):
    return None if r is None else keras.regularizers.L1L2(l1=r["l1"], l2=r["l2"])


OPTIMIZERS = {
    "sgd": lambda r, lr: keras.optimizers.SGD(learning_rate=lr, momentum=r["momentum"], nesterov=r["nesterov"]),
    "rms_prop": lambda r, lr: keras.optimizers.RMSprop(
        learning_rate=lr, rho=r["rho"], momentum=r["momentum"], epsilon=r["epsilon"], centered=r["centered"]
    ),
    "adam": lambda r, lr: keras.optimizers.Adam(
        learning_rate=lr, beta_1=r["beta_1"], beta_2=r["beta_2"], epsilon=r["epsilon"], amsgrad=r["amsgrad"]
    ),
    "adagrad": lambda r, lr: keras.optimizers.Adagrad(
        learning_rate=lr, initial_accumulator_value=r["initial_accumulator_value"], epsilon=r["epsilon"]
    ),
    "adadelta": lambda r, lr: keras.optimizers.Adadelta(learning_rate=lr, rho=r["rho"], epsilon=r["epsilon"]),
    "adamax": lambda r, lr: keras.optimizers.Adamax(
        learning_rate=lr, beta_1=r["beta_1"], beta_2=r["beta_2"], epsilon=r["epsilon"]
    ),
    "nadam": lambda r, lr: keras.optimizers.Nadam(
        learning_rate=lr, beta_1=r["beta_1"], beta_2=r["beta_2"], epsilon=r["epsilon"]
    ),
    "lion": lambda r, lr: keras.optimizers.Lion(learning_rate=lr, beta_1=r["beta_1"], beta_2=r["beta_2"]),
}


def build(path):
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "horn":
            raise SystemExit(f"{path}: not a horn model file (use weights-only files with load_weights)")
        if int(meta.get("format_version", "0")) > 1:
            raise SystemExit(f"{path}: format version {meta['format_version']} is newer than this script reads")
        spec = json.loads(meta["model"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    layers = [keras.Input(shape=(spec["input_dim"],))]
    weights = []
    for entry in spec["layers"]:
        cls, name = entry["class_name"], entry["name"]
        if cls == "Dense":
            act, extra = activation_layers(horn_activation(entry["activation"]))
            layers.append(
                keras.layers.Dense(
                    entry["units"],
                    activation=act,
                    use_bias=entry["use_bias"],
                    kernel_regularizer=regularizer(entry.get("kernel_regularizer")),
                    bias_regularizer=regularizer(entry.get("bias_regularizer")),
                    name=name,
                )
            )
            layers.extend(extra)
            weights.append(tensors[f"{name}/kernel"])
            if entry["use_bias"]:
                weights.append(tensors[f"{name}/bias"])
        elif cls == "Dropout":
            layers.append(keras.layers.Dropout(entry["rate"], name=name))
        elif cls == "Activation":
            act, extra = activation_layers(horn_activation(entry["activation"]))
            layers.append(keras.layers.Activation(act, name=name))
            layers.extend(extra)
        else:
            raise SystemExit(f"unknown layer type {cls}")
    model = keras.Sequential(layers, name=spec["name"])
    model.set_weights(weights)

    compile_spec = spec.get("compile")
    if compile_spec:
        opt = compile_spec["optimizer"]
        rule = opt["rule"]
        make = OPTIMIZERS.get(rule["name"])
        if make is not None:
            optimizer = make(rule, opt["learning_rate"])
            metrics = [m["name"] for m in compile_spec["metrics"]]
            loss = compile_spec["loss"]
            loss_fn = keras.losses.get(
                {"class_name": "".join(p.capitalize() for p in loss["name"].split("_")), "config": {
                    k: v for k, v in loss.items() if k != "name"}}
            ) if len(loss) > 1 else loss["name"]
            model.compile(optimizer=optimizer, loss=loss_fn, metrics=metrics)
    return model


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("horn_file")
    ap.add_argument("keras_file")
    ap.add_argument("--check", help="safetensors file with `x` and horn's `probs`")
    args = ap.parse_args(argv)
    model = build(args.horn_file)
    model.summary()
    model.save(args.keras_file)
    print(f"saved {args.keras_file}")
    if args.check:
        with safe_open(args.check, framework="numpy") as f:
            x, ours = f.get_tensor("x"), f.get_tensor("probs")
        theirs = model.predict(x, verbose=0)
        print(f"max |keras - horn| = {np.abs(theirs - ours).max():.3e}")


if __name__ == "__main__":
    main(sys.argv[1:])

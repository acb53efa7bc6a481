//! A Keras `.keras` file (or Keras 2 `.h5` model file), through
//! `horn::saving::load_keras_bytes`: any bytes give a model or an error,
//! never a panic, an abort or an allocation the input cannot justify; a
//! model that loads predicts one sample when its inputs and outputs are
//! small, and what horn writes of it horn reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/keras_use.rs"]
mod keras_use;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = horn::saving::load_keras_bytes(data) {
        keras_use::exercise(m);
    }
});

//! A weights file read into a fixed architecture (`load_weights`).
#![no_main]

use horn::prelude::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut m = Sequential::new().seed(1).input(5).dense(6, Relu).dense(3, Softmax);
    if m.load_weights_from_bytes(data).is_ok() {
        let _ = m.predict(&ndarray::Array2::<f32>::ones((1, 5)));
    }
});

//! A horn model file (`Sequential::load`'s parser): any bytes give a model or
//! an error, never a panic, an abort or an allocation the input cannot justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = horn::Sequential::from_bytes(data) {
        if let Some(d) = m.input_dim().filter(|&d| d <= 4096) {
            let _ = m.predict(&ndarray::Array2::<f32>::ones((1, d)));
        }
        let _ = m.summary();
    }
});

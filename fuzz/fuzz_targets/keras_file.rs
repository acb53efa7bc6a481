//! A Keras `.keras` file (or Keras 2 `.h5` model file), through
//! `horn::saving::load_keras_bytes`: any bytes give a model or an error,
//! never a panic, an abort or an allocation the input cannot justify; a
//! model that loads predicts one sample when its inputs and outputs are
//! small, and what horn writes of it horn reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = horn::saving::load_keras_bytes(data) else {
        return;
    };
    let _ = m.summary();
    let model = m.into_model();
    let small = |shapes: &[&horn::Shape]| {
        shapes.iter().all(|s| {
            s.dims()
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_some_and(|n| n <= 4096)
        })
    };
    if small(&model.input_shapes()) && small(&model.output_shapes()) {
        let x: Vec<ndarray::ArrayD<f32>> = model
            .input_shapes()
            .iter()
            .map(|s| {
                let mut shape = vec![1];
                shape.extend_from_slice(s.dims());
                ndarray::ArrayD::ones(ndarray::IxDyn(&shape))
            })
            .collect();
        let _ = model.predict(x.iter().collect::<Vec<_>>());
    }
    if let Ok(bytes) = model.to_keras_bytes() {
        assert!(
            horn::saving::load_keras_bytes(&bytes).is_ok(),
            "horn wrote a .keras file it cannot read"
        );
    }
});

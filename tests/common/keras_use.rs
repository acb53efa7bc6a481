//! Uses a model loaded from a `.keras` file the way a user would, for the
//! mutation tests (`tests/fuzz_loaders.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/keras_file.rs`): its summary, one prediction when its
//! inputs and outputs are small, and a save, which must load back (what
//! horn writes, horn reads).

/// Panics only when horn wrote a `.keras` file it cannot read.
pub fn exercise(m: horn::saving::KerasModel) {
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
        if let Err(e) = horn::saving::load_keras_bytes(&bytes) {
            panic!("horn wrote a .keras file it cannot read: {e}");
        }
    }
}

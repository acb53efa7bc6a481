//! Each bundled example runs end to end on a small budget (the full runs are
//! `cargo run --release --example NAME`).

#[allow(dead_code)]
#[path = "../examples/penguins.rs"]
mod penguins;

#[allow(dead_code)]
#[path = "../examples/regression.rs"]
mod regression;

#[allow(dead_code)]
#[path = "../examples/multilabel.rs"]
mod multilabel;

#[test]
fn penguins_reaches_high_accuracy() {
    let acc = penguins::run(60, 1, 0).unwrap();
    assert!(acc >= 0.95, "penguins test accuracy {acc}");
}

#[test]
fn regression_beats_the_mean_baseline() {
    let (mae, baseline) = regression::run(60, 1, 0).unwrap();
    assert!(mae < 0.6 * baseline, "MAE {mae} g vs baseline {baseline} g");
}

#[test]
fn multilabel_reports_each_label() {
    let acc = multilabel::run(1, 3000, 0).unwrap();
    assert_eq!(acc.len(), 3);
    assert!(acc.iter().all(|&a| a > 0.8), "{acc:?}");
}

#[allow(dead_code)]
#[path = "../examples/sunspots.rs"]
mod sunspots;

#[allow(dead_code)]
#[path = "../examples/word_language.rs"]
mod word_language;

/// The bar: both recurrent forecasts beat "next month = this month".
#[test]
fn sunspot_forecasts_beat_the_last_value() {
    let [lstm, gru, last] = sunspots::run(20, 1, 0).unwrap();
    assert!(
        lstm < last && gru < last,
        "LSTM {lstm}, GRU {gru}, last value {last}"
    );
}

#[test]
fn word_language_learns_from_letters() {
    let (acc, model) = word_language::run(6, 1, 0).unwrap();
    assert!(acc > 0.7, "test accuracy {acc}");
    // Case is ignored, other characters dropped, long words keep their end.
    assert_eq!(
        word_language::encode("Ab-c").row(0).to_vec()[8..],
        [0, 1, 2, 3]
    );
    assert_eq!(word_language::encode("abcdefghijklmnop").row(0)[0], 5);
    assert!(model.predict(word_language::encode("zzz")).is_ok());
}

#[allow(dead_code)]
#[path = "../examples/multi_io.rs"]
mod multi_io;

#[test]
fn multi_io_learns_both_outputs() {
    let s = multi_io::run(60, 1, 0).unwrap();
    assert!(s.accuracy >= 0.95, "species accuracy {}", s.accuracy);
    // The body mass spread (sd) is about 800 g; the model must do much better.
    assert!(s.mass_mae_g < 400.0, "body mass MAE {} g", s.mass_mae_g);
}

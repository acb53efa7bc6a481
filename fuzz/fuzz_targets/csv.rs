//! CSV tables (`Table::from_csv_str`) and the conversions a recipe applies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = horn::preprocessing::Table::from_csv_str(&String::from_utf8_lossy(data)) {
        let names: Vec<String> = t.names().to_vec();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = t.drop_na().numeric_matrix(&refs);
        for n in &refs {
            let _ = t.categorical(n);
        }
    }
});

//! MNIST's IDX format, gzipped or plain (images and labels).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = horn::datasets::mnist::parse_images(data);
    let _ = horn::datasets::mnist::parse_labels(data);
});

//! Any bytes given to the CSV reader: never a panic; a dataset that holds together, or a one-line
//! error naming the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_gpu::data::{read_csv, CLASSES, PIXELS};

fuzz_target!(|bytes: &[u8]| {
    match read_csv(bytes, "fuzz.csv") {
        Ok(data) => {
            assert!(!data.images.is_empty());
            assert_eq!(data.images.len() % PIXELS, 0);
            if let Some(labels) = &data.labels {
                assert_eq!(labels.len(), data.len());
                assert!(labels.iter().all(|&label| usize::from(label) < CLASSES));
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz.csv: "), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});

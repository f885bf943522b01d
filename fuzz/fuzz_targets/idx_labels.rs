//! Any bytes given to the IDX labels reader: never a panic; labels 0-9, or a one-line error
//! naming the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_gpu::data::{read_idx_labels, CLASSES};

fuzz_target!(|bytes: &[u8]| {
    match read_idx_labels(bytes, "fuzz-labels") {
        Ok(labels) => {
            assert!(!labels.is_empty());
            assert!(labels.iter().all(|&label| usize::from(label) < CLASSES));
            if !bytes.starts_with(&[0x1f, 0x8b]) {
                assert_eq!(labels.len() + 8, bytes.len());
                assert_eq!(&bytes[8..], &labels[..]);
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz-labels: "), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});

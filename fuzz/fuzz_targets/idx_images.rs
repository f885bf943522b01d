//! Any bytes given to the IDX images reader: never a panic, never an allocation sized by the
//! header's claims; whole 28×28 images, or a one-line error naming the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_gpu::data::{read_idx_images, PIXELS};

fuzz_target!(|bytes: &[u8]| {
    match read_idx_images(bytes, "fuzz-images") {
        Ok(pixels) => {
            assert!(!pixels.is_empty());
            assert_eq!(pixels.len() % PIXELS, 0);
            // Plain IDX: exactly the header and the pixels.
            if !bytes.starts_with(&[0x1f, 0x8b]) {
                assert_eq!(pixels.len() + 16, bytes.len());
                assert_eq!(&bytes[16..], &pixels[..]);
            }
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz-images: "), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});

//! What a run's samples are to a backend: one pool of images (the training file's, then the
//! test file's), index lists that select from it (train, dev, test), and the per-image shifts
//! `--augment` draws. Both backends and the training loop speak these types.

use std::sync::Arc;

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

use super::{Dataset, CLASSES, PIXELS};
use crate::error::{config, Result};

/// All images a run touches (the training file's, then the test file's), as bytes, with labels.
/// Index lists select from it, so nothing is copied per batch.
#[derive(Debug, Clone, Default)]
pub struct ImagePool {
    /// n × 784 bytes, one image after another.
    pub images: Vec<u8>,
    /// n labels, 0..=9.
    pub labels: Vec<u8>,
}

/// `samples` images of random bytes with random labels, the same for the same seed: the data
/// of `mnist-gpu bench` and of `benches/train_step.rs`. Throughput does not depend on the
/// pixel values, and needing no file keeps the benchmark runnable anywhere.
pub fn synthetic_pool(samples: usize, seed: u64) -> ImagePool {
    let mut rng = StdRng::seed_from_u64(seed);
    let images = (0..samples * PIXELS).map(|_| rng.random::<u8>()).collect();
    let labels = (0..samples)
        .map(|_| rng.random_range(0..CLASSES as u8))
        .collect();
    ImagePool { images, labels }
}

/// The three index lists a backend holds, each a list of positions in the `ImagePool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// The training samples, in this epoch's order.
    Train,
    Dev,
    Test,
}

/// How long each list is; fixed when a backend is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListSizes {
    pub train: usize,
    pub dev: usize,
    pub test: usize,
}

impl ListSizes {
    pub fn len(&self, list: List) -> usize {
        match list {
            List::Train => self.train,
            List::Dev => self.dev,
            List::Test => self.test,
        }
    }

    /// Where each list starts when the three are stored one after another.
    pub fn offset(&self, list: List) -> usize {
        match list {
            List::Train => 0,
            List::Dev => self.train,
            List::Test => self.train + self.dev,
        }
    }

    pub fn total(&self) -> usize {
        self.train + self.dev + self.test
    }
}

/// How far `--augment` moves one image: pixel (r, c) of the shifted image is pixel
/// (r − dy, c − dx) of the original, and 0 (background) where that falls outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shift {
    pub dx: i8,
    pub dy: i8,
}

/// The training file split into train and dev, and the test file, all in one image pool.
pub struct Split {
    pub pool: Arc<ImagePool>,
    pub train: Vec<u32>,
    pub dev: Vec<u32>,
    pub test: Vec<u32>,
}

impl Split {
    /// Shuffles the training file with `seed`, holds the first `dev_size` images out as the
    /// dev set, and appends the test file's images after the training file's.
    pub fn new(
        train_file: &Dataset,
        test_file: Option<&Dataset>,
        dev_size: usize,
        seed: u64,
    ) -> Result<Split> {
        let train_labels = train_file.require_labels()?;
        let n = train_file.len();
        if dev_size >= n {
            return config(format!(
                "--dev-size {dev_size} leaves no training data: {} has {n} images",
                train_file.source
            ));
        }
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let (dev, train) = order.split_at(dev_size);

        let mut pool = ImagePool {
            images: train_file.images.clone(),
            labels: train_labels.to_vec(),
        };
        let mut test = Vec::new();
        if let Some(t) = test_file {
            pool.images.extend_from_slice(&t.images);
            pool.labels.extend_from_slice(t.require_labels()?);
            test = (n as u32..(n + t.len()) as u32).collect();
        }
        Ok(Split {
            pool: Arc::new(pool),
            train: train.to_vec(),
            dev: dev.to_vec(),
            test,
        })
    }

    pub fn sizes(&self) -> ListSizes {
        ListSizes {
            train: self.train.len(),
            dev: self.dev.len(),
            test: self.test.len(),
        }
    }

    /// Labels of a list, in list order.
    pub fn labels(&self, list: List) -> Vec<u8> {
        let indices = match list {
            List::Train => &self.train,
            List::Dev => &self.dev,
            List::Test => &self.test,
        };
        indices
            .iter()
            .map(|&i| self.pool.labels[i as usize])
            .collect()
    }
}

/// How far `--augment` shifts an image, in pixels, along each axis.
pub const MAX_SHIFT: i8 = 2;

/// Per-image shifts for one batch: (dx, dy), each in −MAX_SHIFT..=MAX_SHIFT.
pub fn draw_shifts(rng: &mut ChaCha12Rng, len: usize, shifts: &mut Vec<Shift>) {
    shifts.clear();
    shifts.extend((0..len).map(|_| Shift {
        dx: rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
        dy: rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_pool_is_seeded_and_shaped_like_mnist() {
        let pool = synthetic_pool(50, 1);
        assert_eq!(pool.images.len(), 50 * PIXELS);
        assert_eq!(pool.labels.len(), 50);
        assert!(pool.labels.iter().all(|&l| (l as usize) < CLASSES));
        let again = synthetic_pool(50, 1);
        assert_eq!((&pool.images, &pool.labels), (&again.images, &again.labels));
        assert_ne!(pool.images, synthetic_pool(50, 2).images);
    }
}

//! Files found beside the one given, by the names their distributions give them: an IDX or
//! `.npy` images file's labels, and a training file's test set.
//!
//! - labels: IDX `*-images-idx3-ubyte` -> `*-labels-idx1-ubyte` (also `images.idx3` ->
//!   `labels.idx1`, `idx3` -> `idx1`, and `images` -> `labels` for IDX named otherwise, such as
//!   `images.gz`); `.npy` `x_train.npy` -> `y_train.npy` (a name starting with `x` or `X` takes
//!   `y`: `X.npy` -> `y.npy`), else `images` -> `labels` (`images.npy` -> `labels.npy`);
//! - test sets: a name with `train` in it, with `train` made `t10k` (MNIST's IDX names) or `test`
//!   (`mnist_train.npy` -> `mnist_test.npy`, `train-00000-of-00001.parquet` ->
//!   `test-00000-of-00001.parquet`), plain or `.gz`; for parquet also the one `test*.parquet`
//!   beside a `train*.parquet` when the shard counts differ. `.npz` files and folders hold their
//!   test sets themselves (`super::npy`, `super::folder`).

use std::path::{Path, PathBuf};

use super::sniff::Kind;

/// The labels file beside an images file of `kind` (IDX or `.npy`), if it exists.
pub(super) fn labels_beside(images: &Path, kind: Kind) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let candidates: Vec<String> = match kind {
        Kind::Npy => npy_label_names(name),
        _ => [
            ("images-idx3", "labels-idx1"),
            ("images.idx3", "labels.idx1"),
            ("idx3", "idx1"),
            ("images", "labels"),
            ("Images", "Labels"),
            ("IMAGES", "LABELS"),
        ]
        .iter()
        .filter(|(from, _)| name.contains(from))
        .map(|(from, to)| name.replacen(from, to, 1))
        .collect(),
    };
    candidates
        .into_iter()
        .filter(|candidate| candidate != name)
        .map(|candidate| images.with_file_name(candidate))
        .find(|candidate| candidate.is_file())
}

/// The names a `.npy` of images' labels may have.
fn npy_label_names(name: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(rest) = name.strip_prefix(['x', 'X']) {
        names.push(format!("y{rest}"));
        names.push(format!("Y{rest}"));
    }
    for (from, to) in [
        ("images", "labels"),
        ("Images", "Labels"),
        ("IMAGES", "LABELS"),
    ] {
        if name.contains(from) {
            names.push(name.replacen(from, to, 1));
        }
    }
    names
}

/// The test set beside a training file of `kind`, if there is one: the same name with `train`
/// made `t10k` (IDX) or `test`, plain or gzip-compressed, existing and not the file itself.
pub(super) fn test_file_beside(train: &Path, kind: Kind) -> Option<PathBuf> {
    let name = train.file_name()?.to_str()?;
    if !name.contains("train") {
        return None;
    }
    let replacements: &[&str] = match kind {
        Kind::Idx => &["t10k", "test"],
        _ => &["test"],
    };
    let mut candidates = Vec::new();
    for to in replacements {
        let renamed = name.replace("train", to);
        candidates.push(renamed.clone());
        match renamed.strip_suffix(".gz") {
            Some(plain) => candidates.push(plain.to_string()),
            None => candidates.push(format!("{renamed}.gz")),
        }
    }
    let found = candidates
        .into_iter()
        .map(|candidate| train.with_file_name(candidate))
        .find(|candidate| candidate.is_file() && candidate != train);
    match (found, kind) {
        (None, Kind::Parquet) => lone_test_parquet(train, name),
        (found, _) => found,
    }
}

/// Beside `train*.parquet`, the one `test*.parquet` (shards are named by their count, which
/// differs between the splits: `train-00000-of-00002`, `test-00000-of-00001`).
fn lone_test_parquet(train: &Path, name: &str) -> Option<PathBuf> {
    if !name.starts_with("train") {
        return None;
    }
    let dir = match train.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tests: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("test") && n.ends_with(".parquet"))
        })
        .collect();
    match tests.as_slice() {
        [one] => Some(train.with_file_name(one.file_name()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_found_by_the_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            path
        };
        let images = dir.path().join("images.gz");
        assert_eq!(labels_beside(&images, Kind::Idx), None);
        assert_eq!(labels_beside(&images, Kind::Idx), None);
        let labels = touch("labels.gz");
        assert_eq!(labels_beside(&images, Kind::Idx), Some(labels));
        for (x, y) in [
            ("x_train.npy", "y_train.npy"),
            ("X.npy", "y.npy"),
            ("images.npy", "labels.npy"),
            ("test_images.npy", "test_labels.npy"),
        ] {
            let labels = touch(y);
            assert_eq!(
                labels_beside(&dir.path().join(x), Kind::Npy),
                Some(labels),
                "{x}"
            );
        }
    }

    #[test]
    fn test_sets_are_found_by_the_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"").unwrap();
            path
        };
        let train = touch("train-images-idx3-ubyte.gz");
        assert_eq!(test_file_beside(&train, Kind::Idx), None);
        let t10k = touch("t10k-images-idx3-ubyte");
        assert_eq!(test_file_beside(&train, Kind::Idx), Some(t10k));
        let npy = touch("x_train.npy");
        let test = touch("x_test.npy");
        assert_eq!(test_file_beside(&npy, Kind::Npy), Some(test));
        let shard = touch("train-00000-of-00002.parquet");
        assert_eq!(test_file_beside(&shard, Kind::Parquet), None);
        let test = touch("test-00000-of-00001.parquet");
        assert_eq!(test_file_beside(&shard, Kind::Parquet), Some(test));
        let data = touch("data.csv");
        assert_eq!(test_file_beside(&data, Kind::Text), None);
    }
}

//! Folders of pictures, as torchvision's `ImageFolder` reads them: `root/<class>/*.png|jpg`, one
//! folder per class, classes numbered in the sorted order of their names, except that folders
//! named `0` to `9` are those digits. A folder of pictures without class folders is unlabelled
//! (for `predict`). A folder holding `train/` and `test/` is a dataset of both: `--train` reads
//! `train/` and `--test`, `eval` and `predict` read `test/`.
//!
//! Which files are pictures is told by their bytes (PNG or JPEG), whatever their names. Hidden
//! files (`.DS_Store`) and the thumbnails caches some systems leave (`Thumbs.db`, `desktop.ini`)
//! are skipped; any other file that is no picture is an error naming it. Pictures are read in
//! the order torchvision reads them: class by class, and in each class folder its files sorted by
//! name, then its subfolders' in order.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::picture::{self, Prepared};
use super::{display, DataError, Dataset, Loaded, Origin, Part, CLASSES, PIXELS};

/// The names of the split folders.
pub const TRAIN_FOLDER: &str = "train";
pub const TEST_FOLDER: &str = "test";

/// Files that systems leave in folders of pictures, skipped (with hidden files).
const SKIPPED: [&str; 2] = ["thumbs.db", "desktop.ini"];

/// Reads a folder of pictures: the part `part` names of a split folder, else the folder.
pub(super) fn read(root: &Path, part: Part) -> Result<Loaded, DataError> {
    let root = split_part(root, part)?;
    let entries = entries(&root)?;
    let classes: Vec<&Entry> = entries.iter().filter(|e| e.is_dir).collect();
    let loose: Vec<&Entry> = entries.iter().filter(|e| !e.is_dir).collect();
    let (files, labels, notes) = if classes.is_empty() {
        let files = pictures_among(&loose)?;
        (files, None, Vec::new())
    } else {
        if let Some(picture) = loose.iter().find(|e| is_picture_file(&e.path)) {
            return Err(folder_error(
                &root,
                format!(
                    "it holds class folders and also a picture, {}: a picture belongs in its \
                     class's folder",
                    file_name(&picture.path)
                ),
            ));
        }
        let found = classified(&root, &classes)?;
        (found.files, Some(found.labels), found.notes)
    };
    if files.is_empty() {
        return Err(folder_error(
            &root,
            "the directory holds no pictures (PNG or JPEG files, or folders of them, one per \
             class)"
                .to_string(),
        ));
    }
    let prepared = prepare_all(&files)?;
    let mut images = Vec::with_capacity(files.len() * PIXELS);
    let mut origins = Vec::with_capacity(files.len());
    for (file, p) in files.iter().zip(prepared) {
        images.extend_from_slice(&p.pixels);
        origins.push(Origin {
            name: display(file),
            inverted: p.inverted,
        });
    }
    Ok(Loaded {
        dataset: Dataset {
            images,
            labels,
            source: display(&root),
        },
        pictures: origins,
        notes,
    })
}

/// The picture files a folder reads as `part`, in order (for a resumed run's identity: see
/// `super::files_of`), or an empty list when it cannot be listed.
pub(super) fn files_of(root: &Path, part: Part) -> Vec<PathBuf> {
    let listed = || -> Result<Vec<PathBuf>, DataError> {
        let root = split_part(root, part)?;
        let entries = entries(&root)?;
        let classes: Vec<&Entry> = entries.iter().filter(|e| e.is_dir).collect();
        if classes.is_empty() {
            let loose: Vec<&Entry> = entries.iter().collect();
            return pictures_among(&loose);
        }
        Ok(classified(&root, &classes)?.files)
    };
    listed().unwrap_or_default()
}

/// The split folder a part reads (`train/` or `test/`) when the folder is split, else the folder.
fn split_part(root: &Path, part: Part) -> Result<PathBuf, DataError> {
    let (train, test) = (root.join(TRAIN_FOLDER), root.join(TEST_FOLDER));
    let (has_train, has_test) = (train.is_dir(), test.is_dir());
    Ok(match part {
        Part::Train if has_train => train,
        Part::Test if has_test => test,
        // A split folder without the part asked for: its other part is all there is.
        Part::Train if has_test => test,
        Part::Test if has_train => train,
        _ => root.to_path_buf(),
    })
}

/// The test folder beside a training folder: `test/` in a split folder read for training, or
/// a sibling named like it with `train` made `test` (`mnist/train` -> `mnist/test`).
/// Only a test folder of class folders counts: a test set must be labelled.
pub(super) fn test_beside(root: &Path) -> Option<PathBuf> {
    let labelled = |dir: &Path| entries(dir).is_ok_and(|e| e.iter().any(|e| e.is_dir));
    let test = root.join(TEST_FOLDER);
    if root.join(TRAIN_FOLDER).is_dir() && test.is_dir() {
        return labelled(&test).then_some(test);
    }
    let name = root.file_name()?.to_str()?;
    let sibling = root.with_file_name(name.replace(TRAIN_FOLDER, TEST_FOLDER));
    (name.contains(TRAIN_FOLDER) && sibling.is_dir() && labelled(&sibling)).then_some(sibling)
}

/// One entry of a folder.
struct Entry {
    path: PathBuf,
    is_dir: bool,
}

/// A folder's entries, sorted by name, without hidden files and system leftovers.
fn entries(dir: &Path) -> Result<Vec<Entry>, DataError> {
    let io_error = |source| DataError::Io {
        file: display(dir),
        action: "read",
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if name.starts_with('.') || SKIPPED.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, as torchvision does.
        let is_dir = path.is_dir();
        entries.push(Entry { path, is_dir });
    }
    entries.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
    Ok(entries)
}

/// The pictures among loose files; any other file is an error naming it.
fn pictures_among(files: &[&Entry]) -> Result<Vec<PathBuf>, DataError> {
    let mut pictures = Vec::new();
    for entry in files {
        if entry.is_dir {
            continue;
        }
        let start = read_start(&entry.path)?;
        if !picture::is_picture(&start) {
            return Err(DataError::At {
                file: display(&entry.path),
                place: "picture".to_string(),
                message: format!(
                    "not a PNG or JPEG picture ({}): a folder of pictures holds PNG and JPEG \
                     files only; move it out",
                    super::sniff::describe(&start)
                ),
            });
        }
        pictures.push(entry.path.clone());
    }
    Ok(pictures)
}

/// The pictures of class folders, in order, with their labels.
struct Classified {
    files: Vec<PathBuf>,
    labels: Vec<u8>,
    /// The line that says how the classes were numbered, when their names are not the digits.
    notes: Vec<String>,
}

/// The pictures of every class folder, in order, with their labels.
fn classified(root: &Path, classes: &[&Entry]) -> Result<Classified, DataError> {
    let names: Vec<String> = classes
        .iter()
        .map(|e| {
            e.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let digits = names
        .iter()
        .all(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit());
    if !digits && names.len() > CLASSES {
        return Err(folder_error(
            root,
            format!(
                "{} class folders ({}, ...), but the network tells {CLASSES} classes",
                names.len(),
                names[..3].join(", ")
            ),
        ));
    }
    let mut notes = Vec::new();
    if !digits {
        let mapping: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{n}={k}"))
            .collect();
        notes.push(format!(
            "{}: classes numbered in the order of their names, as torchvision numbers them: {}",
            display(root),
            mapping.join(", ")
        ));
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (k, (class, name)) in classes.iter().zip(&names).enumerate() {
        let label = if digits {
            name.as_bytes()[0] - b'0'
        } else {
            k as u8
        };
        let found = walk(&class.path)?;
        labels.extend(std::iter::repeat_n(label, found.len()));
        files.extend(found);
    }
    Ok(Classified {
        files,
        labels,
        notes,
    })
}

/// The pictures in a class folder and its subfolders: each folder's files sorted by name, the
/// folders in the sorted order of their paths (torchvision's `sorted(os.walk(...))`).
fn walk(class: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut folders = vec![class.to_path_buf()];
    let mut k = 0;
    while k < folders.len() {
        let inner: Vec<PathBuf> = entries(&folders[k])?
            .into_iter()
            .filter(|e| e.is_dir)
            .map(|e| e.path)
            .collect();
        folders.extend(inner);
        k += 1;
    }
    folders.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    let mut pictures = Vec::new();
    for folder in &folders {
        let files = entries(folder)?;
        let loose: Vec<&Entry> = files.iter().collect();
        pictures.extend(pictures_among(&loose)?);
    }
    Ok(pictures)
}

/// Every picture decoded and prepared, in parallel; the first that fails, in order, is the error.
fn prepare_all(files: &[PathBuf]) -> Result<Vec<Prepared>, DataError> {
    files
        .par_iter()
        .map(|file| {
            let bytes = std::fs::read(file).map_err(|source| DataError::Io {
                file: display(file),
                action: "read",
                source,
            })?;
            picture::prepare(&bytes, &display(file))
        })
        .collect()
}

/// The first bytes of a file, enough to tell a picture.
fn read_start(path: &Path) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let io_error = |action, source| DataError::Io {
        file: display(path),
        action,
        source,
    };
    let file = std::fs::File::open(path).map_err(|e| io_error("open", e))?;
    let mut start = Vec::with_capacity(16);
    file.take(16)
        .read_to_end(&mut start)
        .map_err(|e| io_error("read", e))?;
    Ok(start)
}

/// True if a file starts like a picture (false when it cannot be read: it is then refused by
/// the reading of the pictures, naming it).
fn is_picture_file(path: &Path) -> bool {
    read_start(path).is_ok_and(|start| picture::is_picture(&start))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn folder_error(root: &Path, message: String) -> DataError {
    DataError::At {
        file: display(root),
        place: "folder".to_string(),
        message,
    }
}

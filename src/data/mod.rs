//! Loading MNIST digits from the files people actually have.
//!
//! A file's format is told by its bytes (`sniff`), the name being a hint at most:
//!
//! - **IDX**, the format of the original MNIST distribution
//!   (`train-images-idx3-ubyte.gz` + `train-labels-idx1-ubyte.gz`), plain or gzip-compressed;
//! - **CSV**: Kaggle's digit-recognizer `train.csv` (`label,pixel0,...,pixel783`) and `test.csv`
//!   (`pixel0,...,pixel783`, no labels), or the common headerless `mnist_train.csv` (label first),
//!   separated by commas, semicolons or tabs, whatever the file's name;
//! - **NumPy**: Keras's `mnist.npz` and other `.npz` archives, `.npy` arrays (`npy`);
//! - **Hugging Face** `datasets` parquet files (`parquet`);
//! - **pictures**: one PNG or JPEG, or a folder of them as torchvision's `ImageFolder` reads it
//!   (`folder`), each made an MNIST image by MNIST's own steps (`picture`).
//!
//! Files that hold a training and a test set (a `.npz`, a folder with `train/` and `test/`) are
//! read for one [`Part`]; a training file's test set beside it is found by `test_beside`.
//!
//! Images are kept as bytes (0..=255), exactly as stored in the files. Turning them into floats is
//! the trainer's business; keeping bytes here uses a quarter of the memory and makes round trips
//! exact.
//!
//! Every error names the file, where in it the problem is, and what is wrong, on one line, because
//! the person reading it usually has a 100 MB file they cannot open in an editor.
//!
//! `pool` holds what a run's samples are to a backend: the image pool, the index lists, the
//! shifts of `--augment`, and the synthetic data of the benchmarks.

mod beside;
mod csv;
mod exif;
mod folder;
mod idx;
mod npy;
mod parquet;
pub mod picture;
pub mod pool;
mod sniff;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use sniff::{Kind, GZIP_MAGIC, SNIFF_LEN};

pub use folder::{TEST_FOLDER, TRAIN_FOLDER};
pub use npy::PAIRS as NPZ_PAIRS;

/// Width and height of an MNIST image, in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image (28 × 28).
pub const PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of digit classes (0 to 9).
pub const CLASSES: usize = 10;

/// A set of images, with their labels when the file had them.
///
/// Images are bytes (0..=255), one image after another (784 bytes each, row-major), never floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// All pixels, `len() * PIXELS` bytes.
    pub images: Vec<u8>,
    /// One label (0..=9) per image, or `None` for an unlabeled file (Kaggle's `test.csv`, or IDX
    /// images without a labels file beside them).
    pub labels: Option<Vec<u8>>,
    /// The path the data was read from, so later messages can name it.
    pub source: String,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / PIXELS
    }

    /// True if there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The 784 pixels of image `i` (row-major).
    ///
    /// # Panics
    /// If `i >= len()`, like indexing a slice.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The labels, or [`DataError::Unlabeled`] naming the file if there are none.
    ///
    /// Training and measuring accuracy need labels; this turns "no labels" into a message the user
    /// can act on instead of an `Option` the caller has to explain.
    pub fn require_labels(&self) -> Result<&[u8], DataError> {
        self.labels.as_deref().ok_or_else(|| DataError::Unlabeled {
            file: self.source.clone(),
        })
    }

    /// Selects the images (and labels, if any) at the given indices, in that order, as a new
    /// dataset with the same source. Indices may repeat (handy for sampling with replacement).
    ///
    /// # Panics
    /// If an index is `>= len()`; the indices come from the program, not from a file.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|labels| indices.iter().map(|&i| labels[i]).collect());
        Dataset {
            images,
            labels,
            source: self.source.clone(),
        }
    }

    /// The images whose background is bright (dark ink on light paper, the opposite of MNIST's:
    /// see [`picture::bright_background`]), by index.
    pub fn bright_backgrounds(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| picture::bright_background(self.image(i)))
            .collect()
    }
}

/// Which set is read from a file that holds two (a `.npz` with `x_train` and `x_test`, a folder
/// with `train/` and `test/`): `--train` reads the training set; `--test`, `eval` and `predict`
/// the test set. A file of one set reads the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

/// A dataset as read, with what the reading found worth a line.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub dataset: Dataset,
    /// One per image when the images were pictures (a PNG, a folder, a parquet file): where it
    /// came from and whether it was inverted; empty otherwise.
    pub pictures: Vec<Origin>,
    /// Lines to print, e.g. how a folder's classes were numbered.
    pub notes: Vec<String>,
}

/// Where an image read from a picture came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The picture's file, or its row of a parquet file.
    pub name: String,
    /// It had a light background and was inverted (see [`picture`]).
    pub inverted: bool,
}

impl Loaded {
    fn plain(dataset: Dataset) -> Loaded {
        Loaded {
            dataset,
            pictures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The pictures that were inverted: how many, and the first one's name.
    pub fn inverted(&self) -> Option<(usize, &str)> {
        let mut inverted = self.pictures.iter().filter(|p| p.inverted);
        let first = inverted.next()?;
        Some((1 + inverted.count(), first.name.as_str()))
    }
}

/// A training set's test set, found in it or beside it, and how it is named in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beside {
    /// What `open(path, Part::Test)` reads: the file beside, or the training file itself when
    /// it holds both sets (a `.npz`).
    pub path: PathBuf,
    /// E.g. `x_test, y_test of mnist.npz`, or the path.
    pub what: String,
}

/// Everything that can go wrong while reading or writing a dataset.
///
/// Each message is one line: `<file>: <where>: <what is wrong>`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused: file missing, permission denied, disk full...
    #[error("{file}: {action}: {source}")]
    Io {
        file: String,
        /// What we were doing: "open", "read", "create", "write".
        action: &'static str,
        source: io::Error,
    },

    /// The file starts like gzip but cannot be decompressed (corrupt or cut short).
    #[error("{file}: gzip: cannot decompress, the file is corrupt or truncated ({source})")]
    Gzip { file: String, source: io::Error },

    /// `load` could not tell the format from the file's bytes; `looks` says what they look like.
    #[error("{file}: unknown format: {looks}; {formats}", formats = sniff::FORMATS_READ)]
    UnknownFormat { file: String, looks: String },

    /// Something wrong in one part of a file: an array of a `.npz`, a row of a parquet file, a
    /// picture, a folder.
    #[error("{file}: {place}: {message}")]
    At {
        file: String,
        place: String,
        message: String,
    },

    /// Something wrong in a file's header (IDX header, or the CSV header line).
    #[error("{file}: header: {message}")]
    Header { file: String, message: String },

    /// Something wrong on one line of a CSV file (1-based line number).
    #[error("{file}: line {line}: {message}")]
    Line {
        file: String,
        line: u64,
        message: String,
    },

    /// Something wrong with one record of an IDX file (1-based: record 1 is the first).
    #[error("{file}: record {record}: {message}")]
    Record {
        file: String,
        record: usize,
        message: String,
    },

    /// Something wrong with the file as a whole: empty, too short, extra bytes at the end...
    #[error("{file}: data: {message}")]
    Data { file: String, message: String },

    /// Labels were needed but the dataset has none.
    #[error(
        "{file}: labels: this dataset has no labels (Kaggle test.csv-style CSV, IDX images without \
         a *-labels-idx1-ubyte file beside them, a .npy without its labels beside it, a .npz \
         without y_train, pictures not in class folders), but labels are needed here"
    )]
    Unlabeled { file: String },
}

/// Loads a dataset, its format told by its bytes (see the module's list), for training: a
/// file that holds a training and a test set gives its training set (see [`open`]).
pub fn load(path: &Path) -> Result<Dataset, DataError> {
    open(path, Part::Train).map(|loaded| loaded.dataset)
}

/// Reads a dataset, its format told by its bytes, the name being a hint only for bytes that say
/// nothing (an empty or damaged file: its reader then says what is wrong):
///
/// - a directory: a folder of pictures (`folder`);
/// - gzip: decompressed, and what is inside is told the same way;
/// - IDX images (magic `00 00 08 03`): their labels file is looked for beside them (see
///   `beside`; `train-images-idx3-ubyte.gz` -> `train-labels-idx1-ubyte.gz`); without one they
///   read unlabelled. An IDX labels file is refused: its images file is what to pass;
/// - a zip archive: NumPy's `.npz`, the arrays of `part` (see `npy::PAIRS`);
/// - `\x93NUMPY`: a `.npy` of images, its labels `.npy` beside it (`x_train.npy` ->
///   `y_train.npy`);
/// - `PAR1`: a Hugging Face `datasets` parquet file;
/// - a PNG or JPEG: one picture, unlabelled;
/// - text: CSV (`csv`);
/// - anything else: [`DataError::UnknownFormat`], which says what the bytes look like and lists
///   the formats read.
pub fn open(path: &Path, part: Part) -> Result<Loaded, DataError> {
    if path.is_dir() {
        return folder::read(path, part);
    }
    let mut input = open_input(path)?;
    let start = input.peek(SNIFF_LEN)?;
    let file = display(path);
    match sniff::kind(&start, &name_without_gz(path)) {
        Kind::Text => Ok(Loaded::plain(self::csv::read(input)?)),
        Kind::Idx => {
            let labels = beside::labels_beside(path, Kind::Idx);
            Ok(Loaded::plain(read_idx(input, path, labels.as_deref())?))
        }
        Kind::IdxLabels => Err(DataError::Header {
            file,
            message: "this looks like an IDX labels file; pass the images file \
                      (*-images-idx3-ubyte[.gz]) and its labels are found beside it"
                .to_string(),
        }),
        Kind::Npy => {
            let labels = beside::labels_beside(path, Kind::Npy);
            let mut labels = labels.as_deref().map(open_input).transpose()?;
            Ok(Loaded::plain(npy::read_npy(&mut input, labels.as_mut())?))
        }
        Kind::Zip => Ok(Loaded::plain(npy::read_npz_input(&mut input, path, part)?)),
        Kind::Parquet => parquet::read(input.read_whole()?, &file),
        Kind::Png | Kind::Jpeg => one_picture(&input.read_whole()?, file),
        Kind::Unknown => Err(DataError::UnknownFormat {
            file,
            looks: sniff::describe(&start),
        }),
    }
}

/// One picture as a dataset of one unlabelled image.
fn one_picture(bytes: &[u8], file: String) -> Result<Loaded, DataError> {
    let prepared = picture::prepare(bytes, &file)?;
    Ok(Loaded {
        dataset: Dataset {
            images: prepared.pixels,
            labels: None,
            source: file.clone(),
        },
        pictures: vec![Origin {
            name: file,
            inverted: prepared.inverted,
        }],
        notes: Vec::new(),
    })
}

/// The test set that goes with a training set at `train`, if there is one: `t10k-*` beside
/// MNIST's IDX `train-*` files, `x_test`/`y_test` in a `.npz` that also holds `x_train`, `test/`
/// beside `train/`, `test-*.parquet` beside `train-*.parquet`, `x_test.npy` beside
/// `x_train.npy` (see `beside`), when it is labelled. CSV and pictures have none.
pub fn test_beside(train: &Path) -> Option<Beside> {
    if train.is_dir() {
        let path = folder::test_beside(train)?;
        let what = display(&path);
        return Some(Beside { path, what });
    }
    let kind = kind_of(train)?;
    match kind {
        Kind::Zip => {
            let arrays = npy::array_names(File::open(train).ok()?)?;
            let (images, labels) = npy::test_pair(&arrays)?;
            Some(Beside {
                path: train.to_path_buf(),
                what: format!("{images}, {labels} of {}", display(train)),
            })
        }
        Kind::Idx | Kind::Npy | Kind::Parquet => {
            let path = beside::test_file_beside(train, kind)?;
            // A test set must be labelled: IDX or .npy images without their labels are not one.
            let labelled = kind == Kind::Parquet || beside::labels_beside(&path, kind).is_some();
            (labelled && kind_of(&path) == Some(kind)).then(|| Beside {
                what: display(&path),
                path,
            })
        }
        _ => None,
    }
}

/// The name of the format of the data at `path` (`IDX`, `CSV`, `NumPy .npz`, …, `a folder of
/// pictures`), or `None` if it cannot be read.
pub fn format_name(path: &Path) -> Option<&'static str> {
    if path.is_dir() {
        return Some("a folder of pictures");
    }
    kind_of(path).map(Kind::name)
}

/// The kind of a file by its first bytes (and name), or `None` if it cannot be read.
fn kind_of(path: &Path) -> Option<Kind> {
    let mut input = open_input(path).ok()?;
    let start = input.peek(SNIFF_LEN).ok()?;
    Some(sniff::kind(&start, &name_without_gz(path)))
}

/// The file name, lowercase, without a final `.gz`: the name of what is inside.
fn name_without_gz(path: &Path) -> String {
    let name = file_name_lowercase(path);
    match name.strip_suffix(".gz") {
        Some(inner) => inner.to_string(),
        None => name,
    }
}

/// A dataset compiled into the binary: gzip IDX images and labels from `data/mnist/`, so the
/// binary trains from any directory, after `cargo install`, or copied alone to another machine.
pub struct Embedded {
    /// The file in `data/mnist/` the images came from.
    pub file: &'static str,
    images: &'static [u8],
    labels: &'static [u8],
}

/// The first 10,000 digits of MNIST's training set (`data/mnist/README.md`: origin, licence).
pub static EMBEDDED_TRAIN: Embedded = Embedded {
    file: "train-10k-images-idx3-ubyte.gz",
    images: include_bytes!("../../data/mnist/train-10k-images-idx3-ubyte.gz"),
    labels: include_bytes!("../../data/mnist/train-10k-labels-idx1-ubyte.gz"),
};

/// MNIST's canonical 10,000-digit test set.
pub static EMBEDDED_TEST: Embedded = Embedded {
    file: "t10k-images-idx3-ubyte.gz",
    images: include_bytes!("../../data/mnist/t10k-images-idx3-ubyte.gz"),
    labels: include_bytes!("../../data/mnist/t10k-labels-idx1-ubyte.gz"),
};

impl Embedded {
    /// How the dataset is named in messages and in `--json`.
    pub fn name(&self) -> String {
        format!("embedded:data/mnist/{}", self.file)
    }

    /// The compressed bytes: the images file's, then the labels file's.
    pub fn bytes(&self) -> [&'static [u8]; 2] {
        [self.images, self.labels]
    }

    pub fn load(&self) -> Result<Dataset, DataError> {
        let name = self.name();
        let images = read_idx_images(self.images, &name)?;
        let labels = read_idx_labels(self.labels, &name)?;
        check_label_count(
            &labels,
            Path::new(&name),
            images.len() / PIXELS,
            Path::new(&name),
        )?;
        Ok(Dataset {
            images,
            labels: Some(labels),
            source: name,
        })
    }
}

/// The files `load(path)` reads: the file itself, and for IDX or `.npy` images the labels file
/// beside it when there is one; for a folder, its pictures, in the order they are read.
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        return folder::files_of(path, Part::Train);
    }
    let mut files = vec![path.to_path_buf()];
    if let Some(kind @ (Kind::Idx | Kind::Npy)) = kind_of(path) {
        files.extend(beside::labels_beside(path, kind));
    }
    files
}

/// Loads IDX images and, if given, their labels (plain or gzip-compressed, detected from the
/// content). The two files must hold the same number of items.
pub fn load_idx(images: &Path, labels: Option<&Path>) -> Result<Dataset, DataError> {
    read_idx(open_input(images)?, images, labels)
}

/// Reads IDX images from an opened input (`images` is its path) and their labels from `labels`.
fn read_idx(input: Input, images: &Path, labels: Option<&Path>) -> Result<Dataset, DataError> {
    let pixels = idx::read_images(input)?;
    let labels = match labels {
        None => None,
        Some(labels_path) => {
            let labels = idx::read_labels(open_input(labels_path)?)?;
            check_label_count(&labels, labels_path, pixels.len() / PIXELS, images)?;
            Some(labels)
        }
    };
    Ok(Dataset {
        images: pixels,
        labels,
        source: display(images),
    })
}

/// Loads a CSV file (plain or gzip-compressed, detected from the content). The shape (Kaggle
/// `train.csv`, Kaggle `test.csv`, headerless with or without labels) is detected from the first
/// line.
pub fn load_csv(path: &Path) -> Result<Dataset, DataError> {
    self::csv::read(open_input(path)?)
}

/// Reads CSV data from any reader, exactly as [`load_csv`] reads a file (gzip is detected from
/// the content); `name` stands for the file in error messages and becomes the dataset's source.
///
/// Useful for data that is not in a file (a network stream, bytes in memory, a fuzzer's input).
pub fn read_csv<R: Read>(reader: R, name: &str) -> Result<Dataset, DataError> {
    self::csv::read(input_from(reader, name.to_string(), None)?)
}

/// Reads an IDX images file from any reader (plain or gzip, detected from the content) and
/// returns its pixels: a whole number of 28×28 images, at least one. `name` stands for the file
/// in error messages. The header's image count is never trusted for allocating: memory grows
/// only as bytes actually arrive.
pub fn read_idx_images<R: Read>(reader: R, name: &str) -> Result<Vec<u8>, DataError> {
    idx::read_images(input_from(reader, name.to_string(), None)?)
}

/// Reads an IDX labels file from any reader (plain or gzip, detected from the content) and
/// returns the labels, each checked to be 0..=9. `name` stands for the file in error messages.
pub fn read_idx_labels<R: Read>(reader: R, name: &str) -> Result<Vec<u8>, DataError> {
    idx::read_labels(input_from(reader, name.to_string(), None)?)
}

/// Writes a dataset as CSV: with `header`, Kaggle's format (`label,pixel0,...,pixel783`, or
/// `pixel0,...,pixel783` when unlabeled); without, bare rows (label first when labeled).
/// Gzip-compressed if the name ends with `.gz`.
pub fn write_csv(data: &Dataset, path: &Path, header: bool) -> Result<(), DataError> {
    check_writable(data, path)?;
    self::csv::write(data, path, header)
}

/// Writes IDX images and labels files (gzip-compressed when a name ends with `.gz`).
/// The dataset must have labels.
pub fn write_idx(data: &Dataset, images: &Path, labels: &Path) -> Result<(), DataError> {
    check_writable(data, images)?;
    let label_bytes = data.labels.as_deref().ok_or_else(|| DataError::Unlabeled {
        file: data.source.clone(),
    })?;
    idx::write_images(images, &data.images)?;
    idx::write_labels(labels, label_bytes)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the IDX and CSV modules.
// ---------------------------------------------------------------------------------------------

/// A path as text, for messages.
fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Refuses a labels file whose count differs from the images file's.
fn check_label_count(
    labels: &[u8],
    labels_path: &Path,
    images: usize,
    images_path: &Path,
) -> Result<(), DataError> {
    if labels.len() == images {
        return Ok(());
    }
    Err(DataError::Header {
        file: display(labels_path),
        message: format!(
            "{} labels, but the images file {} holds {} images",
            labels.len(),
            display(images_path),
            images
        ),
    })
}

/// The file name (without directories), lowercased, for recognizing extensions.
fn file_name_lowercase(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// An opened input, decompressed on the fly if it is gzip.
struct Input<'a> {
    reader: Box<dyn Read + 'a>,
    gzip: bool,
    file: String,
    /// The size of a plain (not gzip) regular file, from its metadata: lets a reader refuse a
    /// header that claims more data than the file holds without reading it. `None` for gzip
    /// and for readers that are not files.
    plain_len: Option<u64>,
}

impl Input<'_> {
    /// Turns a read error into a `DataError` (see [`read_error`]).
    fn read_error(&self, source: io::Error) -> DataError {
        read_error(&self.file, self.gzip, source)
    }

    /// Reads at most `limit` bytes (fewer only at the end of the file). Growing the buffer only as
    /// bytes actually arrive means a header that lies about its size cannot make us allocate more
    /// than the file really holds.
    fn read_up_to(&mut self, limit: u64) -> Result<Vec<u8>, DataError> {
        let mut bytes = Vec::new();
        match (&mut self.reader).take(limit).read_to_end(&mut bytes) {
            Ok(_) => Ok(bytes),
            Err(err) => Err(self.read_error(err)),
        }
    }

    /// Looks at the first `len` bytes (fewer at the end of the data) and puts them back.
    fn peek(&mut self, len: usize) -> Result<Vec<u8>, DataError> {
        let start = self.read_up_to(len as u64)?;
        let rest = std::mem::replace(&mut self.reader, Box::new(io::empty()));
        self.reader = Box::new(io::Cursor::new(start.clone()).chain(rest));
        Ok(start)
    }

    /// Reads everything (for formats read from memory: zip, parquet, pictures); decompressed
    /// gzip at most [`IN_MEMORY_LIMIT`] bytes.
    fn read_whole(&mut self) -> Result<Vec<u8>, DataError> {
        let limit = self.plain_len.unwrap_or(IN_MEMORY_LIMIT);
        let bytes = self.read_up_to(limit.saturating_add(1))?;
        if self.plain_len.is_none() && bytes.len() as u64 > IN_MEMORY_LIMIT {
            return Err(DataError::Data {
                file: self.file.clone(),
                message: format!(
                    "it decompresses to more than {} GiB; decompress it first",
                    IN_MEMORY_LIMIT >> 30
                ),
            });
        }
        Ok(bytes)
    }

    /// Gzip only notices most damage at the end of the stream (its CRC), so a damaged .gz can
    /// first show up as a bad line or a wrong header. For gzip input, reads on to the end (at
    /// most [`DRAIN_LIMIT`] more bytes, without keeping them) and, if the stream turns out to be
    /// damaged, reports that instead: it is the real cause.
    fn blame_gzip(&mut self, err: DataError) -> DataError {
        if !self.gzip || matches!(err, DataError::Gzip { .. } | DataError::Io { .. }) {
            return err;
        }
        match io::copy(&mut (&mut self.reader).take(DRAIN_LIMIT), &mut io::sink()) {
            Err(source) => match self.read_error(source) {
                damaged @ DataError::Gzip { .. } => damaged,
                _ => err,
            },
            Ok(_) => err,
        }
    }
}

/// The most a gzip-compressed file read whole (a zip, parquet or picture inside) may decompress to.
const IN_MEMORY_LIMIT: u64 = 4 << 30;

/// How much more of a gzip stream is decompressed, after an error, to check that the stream is
/// intact (see [`Input::blame_gzip`]): bounds the time a decompression bomb can cost.
const DRAIN_LIMIT: u64 = 1 << 30;

/// Turns a read error into a `DataError`. While decompressing, bad or missing data shows up as
/// `InvalidInput`/`InvalidData`/`UnexpectedEof`; those mean a damaged .gz, not a disk problem.
fn read_error(file: &str, gzip: bool, source: io::Error) -> DataError {
    let damaged = matches!(
        source.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    );
    if gzip && damaged {
        DataError::Gzip {
            file: file.to_string(),
            source,
        }
    } else {
        DataError::Io {
            file: file.to_string(),
            action: "read",
            source,
        }
    }
}

/// Opens a file for reading, decompressing it if it starts with the gzip magic bytes.
///
/// The content decides, not the name: browsers often unpack `*.gz` downloads but keep the name,
/// and a `.csv` may be compressed. A damaged `.gz` still starts with the magic bytes, so it is
/// caught by the decompressor (see [`Input::read_error`]).
fn open_input(path: &Path) -> Result<Input<'static>, DataError> {
    let file = display(path);
    let opened = File::open(path).map_err(|source| DataError::Io {
        file: file.clone(),
        action: "open",
        source,
    })?;
    // Only a regular file's length means anything (a pipe or a /proc file says 0).
    let plain_len = opened
        .metadata()
        .ok()
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len());
    input_from(opened, file, plain_len)
}

/// Wraps any reader as an [`Input`], decompressing it if it starts with the gzip magic bytes.
/// `plain_len` is the input's length in bytes when known (a regular file).
fn input_from<'a>(
    reader: impl Read + 'a,
    file: String,
    plain_len: Option<u64>,
) -> Result<Input<'a>, DataError> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    // Look at the first two bytes (a reader may deliver them in separate reads) and put them
    // back in front of the rest.
    let mut start = Vec::with_capacity(GZIP_MAGIC.len());
    (&mut reader)
        .take(GZIP_MAGIC.len() as u64)
        .read_to_end(&mut start)
        .map_err(|source| DataError::Io {
            file: file.clone(),
            action: "read",
            source,
        })?;
    // A 1-byte file cannot be gzip; `starts_with` handles it without indexing.
    let gzip = start.starts_with(&GZIP_MAGIC);
    let whole = io::Cursor::new(start).chain(reader);
    let reader: Box<dyn Read + 'a> = if gzip {
        // Multi-member: concatenated .gz files are valid gzip, and anything else after the first
        // member is reported as an error instead of being silently ignored.
        Box::new(MultiGzDecoder::new(BufReader::new(whole)))
    } else {
        Box::new(whole)
    };
    Ok(Input {
        reader,
        gzip,
        file,
        plain_len: if gzip { None } else { plain_len },
    })
}

/// Creates `path` and lets `body` write into it, gzip-compressing if the name ends with `.gz`.
/// Finishing the compressor and flushing are done here so their errors are not lost.
fn write_output(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), DataError> {
    let write_error = |source| DataError::Io {
        file: display(path),
        action: "write",
        source,
    };
    let created = File::create(path).map_err(|source| DataError::Io {
        file: display(path),
        action: "create",
        source,
    })?;
    let mut out = BufWriter::with_capacity(1 << 16, created);
    if file_name_lowercase(path).ends_with(".gz") {
        let mut gz = GzEncoder::new(out, Compression::default());
        body(&mut gz).map_err(write_error)?;
        out = gz.finish().map_err(write_error)?;
    } else {
        body(&mut out).map_err(write_error)?;
    }
    out.flush().map_err(write_error)
}

/// Refuses to write a dataset whose parts do not fit together, since the result could not be
/// read back. (`Dataset`'s fields are public, so this is not guaranteed by construction.)
fn check_writable(data: &Dataset, path: &Path) -> Result<(), DataError> {
    let refuse = |message: String| {
        Err(DataError::Data {
            file: display(path),
            message,
        })
    };
    if !data.images.len().is_multiple_of(PIXELS) {
        return refuse(format!(
            "cannot write {} pixel bytes: not a whole number of {PIXELS}-pixel images",
            data.images.len()
        ));
    }
    if data.is_empty() {
        return refuse("cannot write an empty dataset: it could not be read back".to_string());
    }
    if let Some(labels) = &data.labels {
        if labels.len() != data.len() {
            return refuse(format!(
                "cannot write {} labels for {} images",
                labels.len(),
                data.len()
            ));
        }
        if let Some(bad) = labels.iter().find(|&&label| usize::from(label) >= CLASSES) {
            return refuse(format!("cannot write label {bad}: labels must be 0-9"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dataset {
        Dataset {
            images: (0..3 * PIXELS).map(|i| (i % 251) as u8).collect(),
            labels: Some(vec![7, 2, 9]),
            source: "sample".to_string(),
        }
    }

    #[test]
    fn embedded_sets_load() {
        for (set, n) in [(&EMBEDDED_TRAIN, 10_000), (&EMBEDDED_TEST, 10_000)] {
            let d = set.load().unwrap();
            assert_eq!((d.len(), d.labels.as_ref().map(Vec::len)), (n, Some(n)));
            assert!(d.source.contains(set.file));
        }
    }

    #[test]
    fn dataset_basics() {
        let data = sample();
        assert_eq!(data.len(), 3);
        assert!(!data.is_empty());
        assert_eq!(data.image(1)[0], (PIXELS % 251) as u8);
        let picked = data.subset(&[2, 0, 2]);
        assert_eq!(picked.len(), 3);
        assert_eq!(picked.image(0), data.image(2));
        assert_eq!(picked.image(1), data.image(0));
        assert_eq!(picked.labels, Some(vec![9, 7, 9]));
        assert_eq!(picked.source, "sample");
        assert_eq!(data.require_labels().ok(), Some(&[7u8, 2, 9][..]));
    }

    #[test]
    fn unlabeled_error_names_the_file() {
        let mut data = sample();
        data.labels = None;
        let message = data.require_labels().unwrap_err().to_string();
        assert!(message.starts_with("sample: labels: "), "{message}");
    }

    #[test]
    fn labels_file_is_found_beside_images() {
        let labels_beside = |path: &Path| beside::labels_beside(path, Kind::Idx);
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("t10k-images-idx3-ubyte");
        assert_eq!(labels_beside(&images), None);
        let labels = dir.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&labels, b"").unwrap();
        assert_eq!(labels_beside(&images), Some(labels));

        let dotted = dir.path().join("train-images.idx3-ubyte");
        let dotted_labels = dir.path().join("train-labels.idx1-ubyte");
        std::fs::write(&dotted_labels, b"").unwrap();
        assert_eq!(labels_beside(&dotted), Some(dotted_labels));
    }

    #[test]
    fn inconsistent_dataset_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        let mut data = sample();
        data.labels = Some(vec![1, 2]);
        let message = write_csv(&data, &path, true).unwrap_err().to_string();
        assert!(
            message.contains("cannot write 2 labels for 3 images"),
            "{message}"
        );
        data.labels = Some(vec![1, 2, 10]);
        let message = write_csv(&data, &path, true).unwrap_err().to_string();
        assert!(message.contains("label 10"), "{message}");
    }
}

//! What a file holds, told by its first bytes.
//!
//! Every format read here starts with a signature (IDX's magic number, `PK` for a zip, `\x93NUMPY`,
//! `PAR1`, PNG's and JPEG's), except CSV, which is text. The bytes decide; the file name is only
//! a hint for bytes that say nothing (an empty file, one cut short or damaged), so that its reader
//! can say what is wrong with it. What is neither is refused with what its bytes looked like.

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// IDX images (magic `00 00 08 03`), or another IDX file that the IDX reader explains.
    Idx,
    /// An IDX labels file (magic `00 00 08 01`): its images file is what to pass.
    IdxLabels,
    /// A zip archive: NumPy's `.npz`.
    Zip,
    /// NumPy's `.npy`.
    Npy,
    /// Parquet (Hugging Face `datasets`).
    Parquet,
    /// One picture.
    Png,
    Jpeg,
    /// Text: CSV.
    Text,
    /// None of these.
    Unknown,
}

impl Kind {
    /// The format's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Idx | Kind::IdxLabels => "IDX",
            Kind::Zip => "NumPy .npz",
            Kind::Npy => "NumPy .npy",
            Kind::Parquet => "Hugging Face parquet",
            Kind::Png | Kind::Jpeg => "a picture",
            Kind::Text => "CSV",
            Kind::Unknown => "of an unknown format",
        }
    }
}

/// How many bytes are looked at: enough for every signature and to tell text from binary.
pub(crate) const SNIFF_LEN: usize = 1024;

/// The two bytes every gzip file starts with.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// PNG's eight-byte signature.
pub(crate) const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
/// JPEG's start-of-image marker and the first byte of the next marker.
pub(crate) const JPEG_MAGIC: &[u8] = &[0xff, 0xd8, 0xff];

/// The formats read, for refusals.
pub(crate) const FORMATS_READ: &str = "read are IDX (*-images-idx3-ubyte, labels beside), \
     CSV or text (*.csv, *.txt; comma, semicolon or tab), NumPy *.npz and *.npy, Hugging Face \
     *.parquet, PNG and JPEG pictures, folders of them, and any of these gzip-compressed";

/// The kind of a file from its first bytes (already decompressed if it was gzip) and its name
/// (lowercase, without `.gz`): a signature, else text, else what the name says, else unknown.
pub(crate) fn kind(start: &[u8], name: &str) -> Kind {
    if start.is_empty() {
        return by_name(name).unwrap_or(Kind::Text);
    }
    match by_signature(start) {
        // Labels under an images file's name: the IDX reader says the two seem swapped.
        Some(Kind::IdxLabels) if by_name(name) == Some(Kind::Idx) => return Kind::Idx,
        Some(kind) => return kind,
        None => {}
    }
    if is_text(start) {
        return Kind::Text;
    }
    by_name(name).unwrap_or(Kind::Unknown)
}

/// The kind a signature at the start says, if any.
fn by_signature(start: &[u8]) -> Option<Kind> {
    let idx_type = |code: u8| matches!(code, 0x08 | 0x09 | 0x0b..=0x0e);
    match start {
        [0, 0, 0x08, 0x01, ..] => Some(Kind::IdxLabels),
        [0, 0, code, 1..=4, ..] if idx_type(*code) => Some(Kind::Idx),
        [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => Some(Kind::Zip),
        _ if start.starts_with(b"\x93NUMPY") => Some(Kind::Npy),
        _ if start.starts_with(b"PAR1") => Some(Kind::Parquet),
        _ if start.starts_with(PNG_MAGIC) => Some(Kind::Png),
        _ if start.starts_with(JPEG_MAGIC) => Some(Kind::Jpeg),
        _ => None,
    }
}

/// The kind a file name suggests (lowercase, without `.gz`).
fn by_name(name: &str) -> Option<Kind> {
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| name.ends_with(s));
    if name.contains("idx1-ubyte") || name.contains("idx1.ubyte") {
        Some(Kind::IdxLabels)
    } else if name.contains("idx3-ubyte") || name.contains("idx3.ubyte") {
        Some(Kind::Idx)
    } else if ends(&[".csv", ".txt", ".tsv"]) {
        Some(Kind::Text)
    } else if ends(&[".npz"]) {
        Some(Kind::Zip)
    } else if ends(&[".npy"]) {
        Some(Kind::Npy)
    } else if ends(&[".parquet"]) {
        Some(Kind::Parquet)
    } else if ends(&[".png"]) {
        Some(Kind::Png)
    } else if ends(&[".jpg", ".jpeg"]) {
        Some(Kind::Jpeg)
    } else {
        None
    }
}

/// True if the bytes read as text: UTF-8 (possibly cut in the middle of a character at the end
/// of what was looked at), without control characters other than tab, line ends and form feed.
pub(crate) fn is_text(start: &[u8]) -> bool {
    let valid = match std::str::from_utf8(start) {
        Ok(_) => start.len(),
        // An error with no length is a character cut by the end of the window.
        Err(err) if err.error_len().is_none() => err.valid_up_to(),
        Err(_) => return false,
    };
    start[..valid]
        .iter()
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
}

/// What the first bytes of a file look like, for a refusal: the first 8 in hex, as text where
/// they are printable, and what they resemble when it is a format people confuse with data.
pub(crate) fn describe(start: &[u8]) -> String {
    if start.is_empty() {
        return "the file is empty".to_string();
    }
    let head = &start[..start.len().min(8)];
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    let like = resembles(start)
        .map(|what| format!(", like {what}"))
        .unwrap_or_default();
    format!("it starts with {} ({text:?}){like}", hex.join(" "))
}

/// Formats that are not data but are often passed as data, by their signatures.
fn resembles(start: &[u8]) -> Option<&'static str> {
    const SIGNATURES: [(&[u8], &str); 14] = [
        (b"%PDF", "a PDF document"),
        (b"GIF8", "a GIF picture (PNG and JPEG are read)"),
        (b"BM", "a BMP picture (PNG and JPEG are read)"),
        (b"II*\0", "a TIFF picture (PNG and JPEG are read)"),
        (b"MM\0*", "a TIFF picture (PNG and JPEG are read)"),
        (
            b"\x89HDF",
            "an HDF5 file (Keras .h5): save the arrays with np.savez",
        ),
        (b"\xfd7zXZ\0", "an xz archive: decompress it first"),
        (b"BZh", "a bzip2 archive: decompress it first"),
        (b"\x28\xb5\x2f\xfd", "a zstd archive: decompress it first"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: extract it first"),
        (b"Rar!", "a RAR archive: extract it first"),
        (b"\x7fELF", "a program"),
        (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
        (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
    ];
    if let Some((_, what)) = SIGNATURES.iter().find(|(sig, _)| start.starts_with(sig)) {
        return Some(what);
    }
    if start.len() >= 12 && &start[..4] == b"RIFF" && &start[8..12] == b"WEBP" {
        return Some("a WebP picture (PNG and JPEG are read)");
    }
    if start.len() > 8 && start[8] == b'{' {
        return Some("a safetensors file (a saved model? models go to --model)");
    }
    if start.len() >= 262 && &start[257..262] == b"ustar" {
        return Some("a tar archive: extract it first");
    }
    // Python's pickle protocols 2 to 5 (torch.save's older format, joblib, pickle.dump).
    if matches!(start, [0x80, 2..=5, ..]) {
        return Some("a Python pickle: save the arrays with np.savez");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_decide() {
        assert_eq!(kind(&[0, 0, 8, 3, 0], "x.csv"), Kind::Idx);
        assert_eq!(kind(&[0, 0, 8, 1, 0], "x"), Kind::IdxLabels);
        assert_eq!(kind(&[0, 0, 8, 1, 0], "x-images-idx3-ubyte"), Kind::Idx);
        assert_eq!(kind(&[0, 0, 0x0d, 3, 0], "x"), Kind::Idx);
        assert_eq!(kind(b"PK\x03\x04rest", "x.csv"), Kind::Zip);
        assert_eq!(kind(b"\x93NUMPY\x01\x00", "a.txt"), Kind::Npy);
        assert_eq!(kind(b"PAR1\x15\x04", "a"), Kind::Parquet);
        assert_eq!(kind(b"\x89PNG\r\n\x1a\n\0\0", "a.jpg"), Kind::Png);
        assert_eq!(kind(&[0xff, 0xd8, 0xff, 0xe0], "a.png"), Kind::Jpeg);
    }

    #[test]
    fn text_then_name_then_unknown() {
        assert_eq!(kind(b"label;pixel0\n", "digits.dat"), Kind::Text);
        assert_eq!(kind(b"1,2,3\xe2\x82", "a"), Kind::Text); // a character cut at the end
        assert_eq!(kind(&[0x01, 0x02, 0xff], "a-images-idx3-ubyte"), Kind::Idx);
        assert_eq!(kind(&[0x01, 0x02, 0xff], "a.csv"), Kind::Text);
        assert_eq!(kind(&[0x01, 0x02, 0xff], "a.bin"), Kind::Unknown);
        assert_eq!(kind(b"", "e-images-idx3-ubyte"), Kind::Idx);
        assert_eq!(kind(b"", "e"), Kind::Text);
    }

    #[test]
    fn descriptions() {
        let pdf = describe(b"%PDF-1.7\n\x00\x01");
        assert!(
            pdf.starts_with("it starts with 25 50 44 46 2d 31 2e 37"),
            "{pdf}"
        );
        assert!(
            pdf.contains("\"%PDF-1.7\"") && pdf.contains("PDF document"),
            "{pdf}"
        );
        let raw = describe(&[0xde, 0xad]);
        assert_eq!(raw, "it starts with de ad (\"..\")");
        assert_eq!(describe(b""), "the file is empty");
        let mut model = 100u64.to_le_bytes().to_vec();
        model.extend_from_slice(b"{\"W1\"");
        assert!(describe(&model).contains("safetensors"));
    }
}

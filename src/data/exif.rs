//! A JPEG's EXIF orientation: phones store a photo as the sensor saw it and say in its EXIF
//! data how to turn it upright (a picture taken holding the phone upright is stored on its side,
//! orientation 6). The decoder ignores that, so the picture is turned here, as viewers show it.
//!
//! Only the orientation tag (0x0112) of the first image directory is read: JPEG segments up to
//! the image data, the `Exif` APP1 segment, its TIFF header and directory entries.

/// The orientation a JPEG's EXIF data gives (1 to 8; 1, upright, when there is none or it
/// cannot be read).
pub(super) fn jpeg_orientation(jpeg: &[u8]) -> u16 {
    exif_segment(jpeg)
        .and_then(orientation_in)
        .filter(|o| (1..=8).contains(o))
        .unwrap_or(1)
}

/// The TIFF data of the first APP1 segment that starts with `Exif\0\0`.
fn exif_segment(jpeg: &[u8]) -> Option<&[u8]> {
    let mut at = 2; // after the start-of-image marker
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xff {
            return None;
        }
        let marker = jpeg[at + 1];
        // Start of scan: the image data follows, no more metadata.
        if marker == 0xda {
            return None;
        }
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let body = jpeg.get(at + 4..at + 2 + length)?;
        if marker == 0xe1 && body.starts_with(b"Exif\0\0") {
            return Some(&body[6..]);
        }
        at += 2 + length;
    }
    None
}

/// The orientation tag of the first image directory of TIFF data.
fn orientation_in(tiff: &[u8]) -> Option<u16> {
    let little = match tiff.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at + 2)?;
        Some(if little {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at + 4)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let directory = u32_at(4)? as usize;
    let entries = u16_at(directory)?;
    (0..usize::from(entries))
        .map(|k| directory + 2 + 12 * k)
        .find(|&entry| u16_at(entry) == Some(0x0112))
        .and_then(|entry| u16_at(entry + 8))
}

/// A grey picture (`width × height`) turned as `orientation` says: the picture, its width and
/// its height.
pub(super) fn upright(
    grey: Vec<u8>,
    width: usize,
    height: usize,
    orientation: u16,
) -> (Vec<u8>, usize, usize) {
    if orientation == 1 {
        return (grey, width, height);
    }
    let (w, h) = (width, height);
    // Orientations 5 to 8 swap the sides.
    let (out_w, out_h) = if orientation >= 5 { (h, w) } else { (w, h) };
    // For each pixel of the upright picture, the stored pixel it shows.
    let source = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),         // mirrored
            3 => (w - 1 - x, h - 1 - y), // upside down
            4 => (x, h - 1 - y),         // mirrored upside down
            5 => (y, x),                 // mirrored, on its side
            6 => (y, h - 1 - x),         // on its side: turned a quarter clockwise to show
            7 => (w - 1 - y, h - 1 - x), // mirrored, on its other side
            _ => (w - 1 - y, x),         // 8: turned a quarter counter-clockwise to show
        }
    };
    let turned = (0..out_w * out_h)
        .map(|i| {
            let (sx, sy) = source(i % out_w, i / out_w);
            grey[sy * w + sx]
        })
        .collect();
    (turned, out_w, out_h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG's start with an Exif APP1 segment giving `orientation` (big- or little-endian).
    fn jpeg_start(orientation: u16, little: bool) -> Vec<u8> {
        let u16b = |v: u16| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let u32b = |v: u32| {
            if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let mut tiff = if little {
            b"II*\0".to_vec()
        } else {
            b"MM\0*".to_vec()
        };
        tiff.extend_from_slice(&u32b(8));
        tiff.extend_from_slice(&u16b(2)); // two entries, the orientation second
        for (tag, value) in [(0x010f, 0), (0x0112, orientation)] {
            tiff.extend_from_slice(&u16b(tag));
            tiff.extend_from_slice(&u16b(3)); // SHORT
            tiff.extend_from_slice(&u32b(1));
            tiff.extend_from_slice(&u16b(value));
            tiff.extend_from_slice(&[0, 0]);
        }
        let mut segment = b"Exif\0\0".to_vec();
        segment.extend_from_slice(&tiff);
        let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 0, 4, b'J', b'F'];
        jpeg.extend_from_slice(&[0xff, 0xe1]);
        jpeg.extend_from_slice(&((segment.len() + 2) as u16).to_be_bytes());
        jpeg.extend_from_slice(&segment);
        jpeg.extend_from_slice(&[0xff, 0xda, 0, 2]);
        jpeg
    }

    #[test]
    fn orientation_is_read() {
        assert_eq!(jpeg_orientation(&jpeg_start(6, true)), 6);
        assert_eq!(jpeg_orientation(&jpeg_start(8, false)), 8);
        assert_eq!(jpeg_orientation(&jpeg_start(9, false)), 1);
        assert_eq!(jpeg_orientation(&[0xff, 0xd8, 0xff, 0xda, 0, 2]), 1);
        assert_eq!(jpeg_orientation(&[0xff, 0xd8, 0xff]), 1);
    }

    #[test]
    fn pictures_are_turned_upright() {
        // Stored 3 wide, 2 tall:  a b c / d e f.
        let stored = b"abcdef".to_vec();
        let turn = |o| {
            let (p, w, h) = upright(stored.clone(), 3, 2, o);
            (String::from_utf8(p).unwrap(), w, h)
        };
        assert_eq!(turn(1), ("abcdef".into(), 3, 2));
        assert_eq!(turn(3), ("fedcba".into(), 3, 2));
        // A quarter clockwise: d a / e b / f c.
        assert_eq!(turn(6), ("daebfc".into(), 2, 3));
        // A quarter counter-clockwise: c f / b e / a d.
        assert_eq!(turn(8), ("cfbead".into(), 2, 3));
        assert_eq!(turn(5), ("adbecf".into(), 2, 3));
    }
}

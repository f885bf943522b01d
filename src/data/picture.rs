//! A picture of a digit (PNG or JPEG, any size and colour) made into an MNIST image, by the steps
//! MNIST's own digits went through:
//!
//! 1. **grey levels**: colour to grey as PIL's `convert("L")` does (ITU-R 601 weights),
//!    16-bit to 8-bit by rounding, transparency composited on white paper; a JPEG turned
//!    upright as its EXIF orientation says (a phone's photo);
//! 2. **ink bright on dark**: a picture with a light background (dark ink on paper) is inverted,
//!    and the caller is told, so that it can say so;
//! 3. **levels**: the background becomes 0 and the strongest ink 255;
//! 4. **cropped to the ink**: the smallest box holding every pixel of at least [`INK`];
//! 5. **scaled to fit 20×20**, keeping the aspect ratio, each new pixel the average of the area
//!    it covers (anti-aliased, as MNIST's were);
//! 6. **placed by its centre of mass** at the centre of a 28×28 field.
//!
//! A picture that already is 28×28 with a dark background is an MNIST image: it is taken as it is,
//! byte for byte, so that MNIST saved as PNG files reads back exactly as its IDX files.
//!
//! [`bright_background`] is the rule of step 2 for 784 pixels that were not prepared here (a
//! CSV, IDX or NumPy row), so that such an input can be flagged rather than confidently misread.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat};

use super::{exif, sniff, DataError, IMAGE_SIDE, PIXELS};

/// A picture made into an MNIST image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The 784 pixels, row-major: light ink on a dark background.
    pub pixels: Vec<u8>,
    /// The picture had a light background (dark ink on paper) and was inverted.
    pub inverted: bool,
    /// The picture was 28×28 with a dark background and was taken as it is, byte for byte.
    pub as_is: bool,
}

/// The side of the box a digit is scaled to fit, as MNIST's were (20×20 in the 28×28 field).
pub const DIGIT_BOX: usize = 20;
/// The grey level, after the background is made 0 and the strongest ink 255, from which a pixel
/// counts as ink for cropping: fainter specks of dust or paper grain do not widen the box.
pub const INK: u8 = 64;
/// Pictures larger than this on a side are refused before decoding (a photo is a few thousand).
pub const MAX_SIDE: u32 = 16_384;

/// True if the bytes start like a PNG or a JPEG.
pub fn is_picture(bytes: &[u8]) -> bool {
    bytes.starts_with(sniff::PNG_MAGIC) || bytes.starts_with(sniff::JPEG_MAGIC)
}

/// Decodes a PNG or JPEG and makes it an MNIST image (the module's steps). `name` stands for the
/// picture in error messages (its file, or `upload`).
pub fn prepare(bytes: &[u8], name: &str) -> Result<Prepared, DataError> {
    let (grey, width, height) = decode(bytes, name)?;
    Ok(prepare_grey(&grey, width, height))
}

/// Whether 784 pixels (a 28×28 image, row-major) have a bright background: ink darker than the
/// paper, the opposite of MNIST's. The rule: the 108 pixels of the border are a background (at
/// least three quarters of them within [`BACKGROUND_SPREAD`] grey levels of their median: noise
/// has no background), and it is light by [`light_background`]'s rule.
pub fn bright_background(pixels: &[u8]) -> bool {
    if pixels.len() != PIXELS {
        return false;
    }
    let border = border_pixels(pixels, IMAGE_SIDE, IMAGE_SIDE);
    let median = border[border.len() / 2];
    let near = border
        .iter()
        .filter(|&&v| v.abs_diff(median) <= BACKGROUND_SPREAD)
        .count();
    4 * near >= 3 * border.len() && light_background(pixels, IMAGE_SIDE, IMAGE_SIDE)
}

/// How far from the border's median a border pixel may be and still be background (see
/// [`bright_background`]).
pub const BACKGROUND_SPREAD: u8 = 32;

/// Step 1 onward, from grey levels (`width × height`, row-major).
pub fn prepare_grey(grey: &[u8], width: usize, height: usize) -> Prepared {
    let inverted = light_background(grey, width, height);
    if width == IMAGE_SIDE && height == IMAGE_SIDE && !inverted {
        return Prepared {
            pixels: grey.to_vec(),
            inverted,
            as_is: true,
        };
    }
    let ink: Vec<u8> = if inverted {
        grey.iter().map(|&v| 255 - v).collect()
    } else {
        grey.to_vec()
    };
    let background = border_median(&ink, width, height);
    let levelled = levels(&ink, background);
    let pixels = match ink_box(&levelled, width, height) {
        None => vec![0; PIXELS],
        Some(bounds) => {
            let (cropped, w, h) = crop(&levelled, width, bounds);
            let (scaled, w, h) = scale_to_fit(&cropped, w, h, DIGIT_BOX);
            place_by_centre_of_mass(&scaled, w, h)
        }
    };
    Prepared {
        pixels,
        inverted,
        as_is: false,
    }
}

/// Step 2's rule: the background is the median of the border's pixels; it is light when it is
/// lighter than the picture's mean (the ink is darker than the paper), or, in a picture of one
/// grey, when that grey is above the middle (127).
pub fn light_background(grey: &[u8], width: usize, height: usize) -> bool {
    if grey.is_empty() {
        return false;
    }
    let background = u64::from(border_median(grey, width, height));
    let sum: u64 = grey.iter().map(|&v| u64::from(v)).sum();
    let n = grey.len() as u64;
    background * n > sum || (background * n == sum && background > 127)
}

/// The median of the pixels on the picture's border (its outermost rows and columns).
fn border_median(grey: &[u8], width: usize, height: usize) -> u8 {
    let border = border_pixels(grey, width, height);
    border.get(border.len() / 2).copied().unwrap_or(0)
}

/// The pixels on the picture's border, sorted.
fn border_pixels(grey: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut border: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .filter(|&(x, y)| x == 0 || y == 0 || x + 1 == width || y + 1 == height)
        .map(|(x, y)| grey[y * width + x])
        .collect();
    border.sort_unstable();
    border
}

/// Step 3: the background level becomes 0 and the strongest ink 255, linearly; a picture with no
/// ink above its background becomes all 0.
fn levels(ink: &[u8], background: u8) -> Vec<u8> {
    let strongest = ink.iter().copied().max().unwrap_or(0);
    if strongest <= background {
        return vec![0; ink.len()];
    }
    let range = f32::from(strongest - background);
    ink.iter()
        .map(|&v| {
            let above = f32::from(v.saturating_sub(background));
            (above * 255.0 / range).round() as u8
        })
        .collect()
}

/// Step 4: the smallest box `(x0, y0, x1, y1)` (exclusive ends) holding every pixel of at least
/// [`INK`], or `None` when there is none.
fn ink_box(grey: &[u8], width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
    let mut bounds: Option<(usize, usize, usize, usize)> = None;
    for y in 0..height {
        for x in 0..width {
            if grey[y * width + x] < INK {
                continue;
            }
            let (x0, y0, x1, y1) = bounds.unwrap_or((x, y, x + 1, y + 1));
            bounds = Some((x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)));
        }
    }
    bounds
}

/// The pixels inside `bounds` of a picture `width` wide, and the box's size.
fn crop(
    grey: &[u8],
    width: usize,
    (x0, y0, x1, y1): (usize, usize, usize, usize),
) -> (Vec<u8>, usize, usize) {
    let cropped = (y0..y1)
        .flat_map(|y| grey[y * width + x0..y * width + x1].iter().copied())
        .collect();
    (cropped, x1 - x0, y1 - y0)
}

/// Step 5: scaled so that the longer side is `side` pixels (the shorter in proportion, at least
/// one), each new pixel the mean of the area of the old ones it covers.
fn scale_to_fit(grey: &[u8], width: usize, height: usize, side: usize) -> (Vec<u8>, usize, usize) {
    let scale = side as f64 / width.max(height) as f64;
    let new_width = ((width as f64 * scale).round() as usize).clamp(1, side);
    let new_height = ((height as f64 * scale).round() as usize).clamp(1, side);
    // Area averaging is separable: rows first, then columns.
    let columns = area_weights(width, new_width);
    let rows = area_weights(height, new_height);
    let mut across = vec![0f64; height * new_width];
    for y in 0..height {
        for (x, weights) in columns.iter().enumerate() {
            across[y * new_width + x] = weights
                .iter()
                .map(|&(from, w)| w * f64::from(grey[y * width + from]))
                .sum();
        }
    }
    let mut scaled = vec![0u8; new_width * new_height];
    for (y, weights) in rows.iter().enumerate() {
        for x in 0..new_width {
            let value: f64 = weights
                .iter()
                .map(|&(from, w)| w * across[from * new_width + x])
                .sum();
            scaled[y * new_width + x] = value.round().clamp(0.0, 255.0) as u8;
        }
    }
    (scaled, new_width, new_height)
}

/// For each of `to` new pixels along a side of `from` old ones: the old pixels it covers and the
/// share of it each covers (the shares sum to 1).
fn area_weights(from: usize, to: usize) -> Vec<Vec<(usize, f64)>> {
    let step = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            let (start, end) = (i as f64 * step, (i + 1) as f64 * step);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(from);
            (first..last)
                .map(|j| {
                    let covered = end.min(j as f64 + 1.0) - start.max(j as f64);
                    (j, covered / step)
                })
                .filter(|&(_, w)| w > 0.0)
                .collect()
        })
        .collect()
}

/// Step 6: the digit (`width × height`, at most 28 on a side) in a 28×28 field, moved by whole
/// pixels so that its centre of mass is as near the field's centre as it can be while it stays
/// inside the field.
fn place_by_centre_of_mass(grey: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mass: f64 = grey.iter().map(|&v| f64::from(v)).sum();
    let moment = |coordinate: &dyn Fn(usize) -> usize| -> f64 {
        grey.iter()
            .enumerate()
            .map(|(i, &v)| coordinate(i) as f64 * f64::from(v))
            .sum::<f64>()
            / mass
    };
    let (cx, cy) = if mass > 0.0 {
        (moment(&|i| i % width), moment(&|i| i / width))
    } else {
        ((width as f64 - 1.0) / 2.0, (height as f64 - 1.0) / 2.0)
    };
    // The field's centre lies between pixels 13 and 14.
    let centre = (IMAGE_SIDE as f64 - 1.0) / 2.0;
    let offset = |c: f64, size: usize| {
        ((centre - c).round() as isize).clamp(0, (IMAGE_SIDE - size) as isize) as usize
    };
    let (dx, dy) = (offset(cx, width), offset(cy, height));
    let mut field = vec![0u8; PIXELS];
    for y in 0..height {
        let row = &grey[y * width..(y + 1) * width];
        field[(y + dy) * IMAGE_SIDE + dx..][..width].copy_from_slice(row);
    }
    field
}

/// Decodes a PNG or JPEG to grey levels (step 1): the levels, the width and the height.
fn decode(bytes: &[u8], name: &str) -> Result<(Vec<u8>, usize, usize), DataError> {
    let refuse = |message: String| DataError::At {
        file: name.to_string(),
        place: "picture".to_string(),
        message,
    };
    let format = if bytes.starts_with(sniff::PNG_MAGIC) {
        ImageFormat::Png
    } else if bytes.starts_with(sniff::JPEG_MAGIC) {
        ImageFormat::Jpeg
    } else {
        return Err(refuse(format!(
            "not a PNG or JPEG picture: {}",
            sniff::describe(bytes)
        )));
    };
    let kind = if format == ImageFormat::Png {
        "PNG"
    } else {
        "JPEG"
    };
    let mut reader = image::io::Reader::with_format(Cursor::new(bytes), format);
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let picture = reader.decode().map_err(|err| {
        let why = err.to_string().replace('\n', " ");
        refuse(format!("cannot decode it as {kind}: {why}"))
    })?;
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    if width == 0 || height == 0 {
        return Err(refuse(format!(
            "the {kind} is {width}x{height} pixels: empty"
        )));
    }
    let grey = grey_levels(&picture);
    Ok(match format {
        // A phone's photo turned upright, as viewers show it.
        ImageFormat::Jpeg => exif::upright(grey, width, height, exif::jpeg_orientation(bytes)),
        _ => (grey, width, height),
    })
}

/// Grey levels as PIL's `convert("L")` makes them (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, in
/// 16-bit fixed point), transparency composited on white, 16-bit samples rounded to 8.
fn grey_levels(picture: &DynamicImage) -> Vec<u8> {
    // Every sample widened to 16 bits (v × 257 is exact), so that one formula serves both depths.
    let (samples, channels): (Vec<u32>, usize) = match picture {
        DynamicImage::ImageLuma8(p) => (widen8(p.as_raw()), 1),
        DynamicImage::ImageLumaA8(p) => (widen8(p.as_raw()), 2),
        DynamicImage::ImageRgb8(p) => (widen8(p.as_raw()), 3),
        DynamicImage::ImageRgba8(p) => (widen8(p.as_raw()), 4),
        DynamicImage::ImageLuma16(p) => (widen16(p.as_raw()), 1),
        DynamicImage::ImageLumaA16(p) => (widen16(p.as_raw()), 2),
        DynamicImage::ImageRgb16(p) => (widen16(p.as_raw()), 3),
        DynamicImage::ImageRgba16(p) => (widen16(p.as_raw()), 4),
        other => (widen16(other.to_rgba16().as_raw()), 4),
    };
    samples
        .chunks_exact(channels)
        .map(|pixel| {
            let (colour, alpha) = match channels {
                1 => (pixel[0], None),
                2 => (pixel[0], Some(pixel[1])),
                3 => (luma(pixel), None),
                _ => (luma(pixel), Some(pixel[3])),
            };
            let on_white = match alpha {
                // Paper shows through where the ink is transparent.
                Some(a) => (colour * a + 65_535 * (65_535 - a) + 32_767) / 65_535,
                None => colour,
            };
            ((on_white + 128) / 257) as u8
        })
        .collect()
}

/// A 16-bit RGB sample's grey level (PIL's weights; they sum to 65,536, so grey stays grey).
fn luma(rgb: &[u32]) -> u32 {
    let sum = u64::from(rgb[0]) * 19_595 + u64::from(rgb[1]) * 38_470 + u64::from(rgb[2]) * 7_471;
    ((sum + 32_768) >> 16) as u32
}

fn widen8(samples: &[u8]) -> Vec<u32> {
    samples.iter().map(|&v| u32::from(v) * 257).collect()
}

fn widen16(samples: &[u16]) -> Vec<u32> {
    samples.iter().map(|&v| u32::from(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width × height` picture of `background` with a `ink` bar from (x0, y0) to (x1, y1).
    fn bar(width: usize, height: usize, background: u8, ink: u8, bounds: [usize; 4]) -> Vec<u8> {
        let [x0, y0, x1, y1] = bounds;
        (0..width * height)
            .map(|i| {
                let (x, y) = (i % width, i / width);
                if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                    ink
                } else {
                    background
                }
            })
            .collect()
    }

    #[test]
    fn area_weights_cover_each_new_pixel_once() {
        for (from, to) in [(7, 20), (200, 20), (30, 20), (20, 20), (1, 20), (3, 2)] {
            for weights in area_weights(from, to) {
                let total: f64 = weights.iter().map(|w| w.1).sum();
                assert!((total - 1.0).abs() < 1e-9, "{from}->{to}: {total}");
            }
        }
        // Halving averages pairs.
        let (scaled, w, h) = scale_to_fit(&[0, 255, 100, 100], 4, 1, 2);
        assert_eq!((scaled, w, h), (vec![128, 100], 2, 1));
    }

    #[test]
    fn a_light_picture_is_inverted_cropped_scaled_and_centred() {
        // A dark vertical bar 10 wide and 100 tall on white, off to the left of a 200×150 picture.
        let picture = bar(200, 150, 255, 0, [20, 30, 30, 130]);
        let prepared = prepare_grey(&picture, 200, 150);
        assert!(prepared.inverted && !prepared.as_is);
        // Fit to 20 tall: 2 wide, full ink, centred at columns 13-14 and rows 4-23.
        let ink: Vec<usize> = (0..PIXELS).filter(|&i| prepared.pixels[i] > 0).collect();
        assert_eq!(ink.len(), 40);
        assert!(ink.iter().all(|&i| prepared.pixels[i] == 255));
        assert!(ink.iter().all(|&i| (13..15).contains(&(i % 28))));
        assert!(ink.iter().all(|&i| (4..24).contains(&(i / 28))));
    }

    #[test]
    fn a_dark_28_by_28_picture_is_taken_as_it_is() {
        let picture = bar(28, 28, 0, 200, [0, 0, 3, 5]);
        let prepared = prepare_grey(&picture, 28, 28);
        assert_eq!(prepared.pixels, picture);
        assert!(prepared.as_is && !prepared.inverted);
        // The same on white is no MNIST image: it is inverted and centred.
        let light = bar(28, 28, 255, 55, [0, 0, 3, 5]);
        let prepared = prepare_grey(&light, 28, 28);
        assert!(prepared.inverted && !prepared.as_is);
        assert_eq!(prepared.pixels[14 * 28 + 14], 255);
    }

    #[test]
    fn background_rule() {
        assert!(!bright_background(&[0; PIXELS]));
        assert!(bright_background(&[255; PIXELS]));
        assert!(!bright_background(&[100; PIXELS]));
        assert!(bright_background(&bar(28, 28, 200, 10, [8, 8, 20, 20])));
        assert!(!bright_background(&bar(28, 28, 10, 200, [8, 8, 20, 20])));
        // Grey paper in dim light is still paper: lighter than the mean, with darker ink.
        assert!(light_background(
            &bar(50, 40, 90, 30, [10, 10, 20, 30]),
            50,
            40
        ));
        assert!(!bright_background(&[7; 10]));
        // Noise has no background: never flagged, whatever its mean.
        let noise: Vec<u8> = (0..PIXELS as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        assert!(!bright_background(&noise));
    }

    #[test]
    fn a_blank_picture_is_blank() {
        let prepared = prepare_grey(&[255; 300], 20, 15);
        assert_eq!(prepared.pixels, vec![0; PIXELS]);
    }
}

//! Digits drawn as text, what the tutorials show with matplotlib.

use crate::data::IMAGE_SIDE;

/// Darker pixels get denser characters.
const SHADES: &[u8] = b" .:-=+*#%@";

/// Draws a 28×28 image in 14 lines of 28 characters: each character covers two pixel rows
/// (their mean), which keeps the digit's proportions in a terminal.
pub fn draw(image: &[u8]) -> String {
    let mut out = String::new();
    for row in (0..IMAGE_SIDE).step_by(2) {
        for col in 0..IMAGE_SIDE {
            let top = image[row * IMAGE_SIDE + col] as usize;
            let bottom = image[(row + 1) * IMAGE_SIDE + col] as usize;
            let shade = (top + bottom) / 2 * SHADES.len() / 256;
            out.push(SHADES[shade] as char);
        }
        out.push('\n');
    }
    out
}

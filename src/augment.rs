//! `--augment affine|elastic`: the distortions a training image goes through, as both backends
//! and the training loop speak them. Neutral: the CPU twin (`cpu::ops::warp`) and the GPU kernel
//! (`shaders/warp.wgsl`) both take the `Warps` keyed here and draw each image's warp from it.
//!
//! The warp, an inverse mapping: output pixel (r, c) is the input sampled at
//!
//! ```text
//!     (y, x) = A·(r − 13.5, c − 13.5) + (13.5, 13.5) + t + d(r, c)
//! ```
//!
//! with bilinear interpolation, pixels outside the image reading as 0, and the result rounded to
//! a byte (⌊v + ½⌋) like the input. Per image, A = R(θ)·H(h) / s (a rotation by θ, a shear of x
//! by h·y, a scale s) and t a translation, all uniform in ±their strengths; d is the elastic
//! field (Simard et al. 2003), zero for `affine`: per coordinate and pixel a uniform draw in
//! [−1, 1), smoothed by a Gaussian of σ pixels (separable, truncated at 3σ, the image's
//! outside drawing 0), scaled so that its RMS is `elastic_alpha` pixels.
//!
//! Each image's random numbers come from a counter-based generator (`draws`) keyed by the step's
//! key (one draw a step from the run's augmentation stream, the one `--augment`'s shifts use,
//! whose position the checkpoint stores), the image's place in the batch and the draw's number.
//! The GPU computes them in warp.wgsl and the CPU in `Warps::affine_of`/`field_of`, with the
//! same integers, so a step uploads a key and the strengths (`Warps::record`), not an image's
//! parameters or field; a run is bit-identical run to run and resumes exactly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data::{IMAGE_SIDE, PIXELS};

/// The image's centre, in pixel coordinates: the point A turns about.
pub const CENTER: f32 = (IMAGE_SIDE as f32 - 1.0) / 2.0;

/// Which augmentation a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Augment {
    #[default]
    Off,
    /// Each image moved by up to `pool::MAX_SHIFT` whole pixels each way (`--augment`).
    Shift,
    /// A random affine warp per image.
    Affine(Distortion),
    /// The affine warp plus an elastic field.
    Elastic(Distortion),
}

/// How strong the distortions are: each drawn uniform in ±its value, per image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distortion {
    /// Radians.
    pub rotation: f64,
    /// Relative: 0.12 is a scale in 0.88..1.12.
    pub scale: f64,
    /// x moves by shear·y.
    pub shear: f64,
    /// Pixels, along each axis.
    pub translation: f64,
    /// The elastic field's RMS displacement per coordinate, in pixels.
    pub elastic_alpha: f64,
    /// The width of the Gaussian that smooths the elastic field, in pixels.
    pub elastic_sigma: f64,
}

impl Default for Distortion {
    /// The strengths of the issue's PyTorch runs (98.7–98.8% on t10k).
    fn default() -> Distortion {
        Distortion {
            rotation: 0.2,
            scale: 0.12,
            shear: 0.15,
            translation: 1.7,
            elastic_alpha: 1.0,
            elastic_sigma: 4.0,
        }
    }
}

impl Augment {
    /// The name `--augment` takes: `off`, `shift`, `affine`, `elastic`.
    pub fn name(&self) -> &'static str {
        match self {
            Augment::Off => "off",
            Augment::Shift => "shift",
            Augment::Affine(_) => "affine",
            Augment::Elastic(_) => "elastic",
        }
    }

    /// The strengths of a warp, None for `off` and `shift`.
    pub fn distortion(&self) -> Option<Distortion> {
        match self {
            Augment::Affine(d) | Augment::Elastic(d) => Some(*d),
            _ => None,
        }
    }

    /// Why the strengths cannot be used, naming the option; None when they can.
    pub fn problem(&self) -> Option<String> {
        let d = self.distortion()?;
        let named = [
            ("--rotation", d.rotation),
            ("--scale", d.scale),
            ("--shear", d.shear),
            ("--translation", d.translation),
            ("--elastic-alpha", d.elastic_alpha),
            ("--elastic-sigma", d.elastic_sigma),
        ];
        if let Some((flag, v)) = named.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Some(format!("{flag} {v} must be a finite number ≥ 0"));
        }
        if d.scale >= 1.0 {
            return Some(format!("--scale {} must be below 1", d.scale));
        }
        // Up to a half turn each way is every angle; beyond it, the f32 reduction by π/2 that
        // both backends share would lose its precision.
        if d.rotation > std::f64::consts::PI {
            return Some(format!(
                "--rotation {} must be at most π (3.14159…) radians",
                d.rotation
            ));
        }
        if matches!(self, Augment::Elastic(_)) && !(0.1..=28.0).contains(&d.elastic_sigma) {
            return Some(format!(
                "--elastic-sigma {} must be within 0.1..=28 pixels",
                d.elastic_sigma
            ));
        }
        None
    }
}

/// As the first checkpoints wrote it, `false` and `true` for off and shift; a warp as an object
/// with its `kind` and strengths.
impl Serialize for Augment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Augment::Off => serializer.serialize_bool(false),
            Augment::Shift => serializer.serialize_bool(true),
            Augment::Affine(d) | Augment::Elastic(d) => Written::Warp {
                kind: self.name().to_string(),
                strengths: *d,
            }
            .serialize(serializer),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Written {
    Switch(bool),
    Warp {
        kind: String,
        #[serde(flatten)]
        strengths: Distortion,
    },
}

impl<'de> Deserialize<'de> for Augment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Augment, D::Error> {
        Ok(match Written::deserialize(deserializer)? {
            Written::Switch(false) => Augment::Off,
            Written::Switch(true) => Augment::Shift,
            Written::Warp { kind, strengths } => match kind.as_str() {
                "affine" => Augment::Affine(strengths),
                "elastic" => Augment::Elastic(strengths),
                other => {
                    let message = format!("augment kind {other:?} is neither affine nor elastic");
                    return Err(serde::de::Error::custom(message));
                }
            },
        })
    }
}

/// One image's affine part: (y, x) = A·(r − 13.5, c − 13.5) + 13.5 + t, A row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: [f32; 4],
    /// (ty, tx).
    pub t: [f32; 2],
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        a: [1.0, 0.0, 0.0, 1.0],
        t: [0.0, 0.0],
    };
}

/// Words of warp.wgsl's record before the taps: key (2), elastic, radius, the four strengths,
/// the gain, padding.
pub const RECORD_HEADER: usize = 16;
/// Words of one step's record in warp.wgsl's buffer: the header, then up to 57 taps (a radius
/// of at most 28 pixels), padded.
pub const RECORD_WORDS: usize = 80;
/// Blocks of the field's noise drawn together (`Warps::field_of`), 49 runs an image.
pub const NOISE_LANES: usize = 8;
/// Blocks of four draws an image takes: the affine part's five in blocks 0 and 1, then the
/// field's 2 × 784 (coordinate, then pixel) from block `FIELD_BLOCK`.
pub const FIELD_BLOCK: u32 = 2;

/// A batch's warps as both backends receive them: what to draw and the key to draw it from,
/// a few dozen numbers whatever the batch's size. Image j's random numbers are
/// `draws(key, j, block)`, a counter-based generator that `shaders/warp.wgsl` computes on the
/// GPU and `affine_of`/`field_of` here on the CPU, bit for bit alike (integers only); so
/// nothing per image is drawn on the host or crosses the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Warps {
    /// The strengths in f32, as the kernel multiplies them: rotation, scale, shear,
    /// translation.
    pub strengths: [f32; 4],
    /// The elastic field's blur, offsets −R..=R (`gaussian_taps`), and the gain that makes its
    /// RMS `elastic_alpha`; no taps for `affine`.
    pub taps: Vec<f32>,
    pub gain: f32,
    /// The batch's key (from the run's augmentation stream, one draw a step).
    pub key: [u32; 2],
    /// Images in the batch.
    pub len: usize,
}

impl Warps {
    /// The warps of `augment` (affine or elastic; None otherwise), for a batch not yet keyed.
    pub fn new(augment: &Augment) -> Option<Warps> {
        let d = augment.distortion()?;
        let elastic = matches!(augment, Augment::Elastic(_));
        let taps = if elastic {
            gaussian_taps(d.elastic_sigma)
        } else {
            Vec::new()
        };
        let energy: f64 = taps.iter().map(|&k| (k as f64) * (k as f64)).sum();
        let gain = if elastic {
            (d.elastic_alpha * 3f64.sqrt() / energy) as f32
        } else {
            0.0
        };
        Some(Warps {
            strengths: [d.rotation, d.scale, d.shear, d.translation].map(|v| v as f32),
            taps,
            gain,
            key: [0, 0],
            len: 0,
        })
    }

    /// Keys the warps for a batch of `len` images.
    pub fn for_batch(&mut self, key: u64, len: usize) {
        self.key = [key as u32, (key >> 32) as u32];
        self.len = len;
    }

    pub fn elastic(&self) -> bool {
        !self.taps.is_empty()
    }

    /// Image j's parameters (θ, s, h, ty, tx): each uniform in ±its strength, s about 1.
    pub fn parameters_of(&self, j: usize) -> [f32; 5] {
        let [rotation, scale, shear, translation] = self.strengths;
        let first = draws(self.key, j as u32, 0).map(symmetric);
        let second = draws(self.key, j as u32, 1).map(symmetric);
        [
            rotation * first[0],
            1.0 + scale * first[1],
            shear * first[2],
            translation * first[3],
            translation * second[0],
        ]
    }

    /// Image j's affine map: A = R(θ)·H(h) / s, H = [[1, 0], [h, 1]] acting on (y, x), and t,
    /// in f32 as warp.wgsl computes it.
    pub fn affine_of(&self, j: usize) -> Affine {
        let [theta, s, h, ty, tx] = self.parameters_of(j);
        let (sin, cos) = sin_cos(theta);
        Affine {
            a: [(cos - sin * h) / s, -sin / s, (sin + cos * h) / s, cos / s],
            t: [ty, tx],
        }
    }

    /// Image j's elastic field into `field`, (2, 784): dy for every pixel, then dx. Its noise
    /// is uniform in [−1, 1) per coordinate and pixel, smoothed by the taps along rows, then
    /// columns (outside the image: 0), times the gain; `noise` is scratch of the same size.
    /// The 1,568 draws go in runs of `NOISE_LANES` blocks: run n's word w of its block l is
    /// noise value 32n + 8w + l (so that the CPU stores each word of eight blocks at once).
    #[inline(always)]
    pub fn field_of(&self, j: usize, noise: &mut [f32], field: &mut [f32]) {
        for (chunk, noise) in noise[..2 * PIXELS]
            .chunks_exact_mut(4 * NOISE_LANES)
            .enumerate()
        {
            // Opaque to the vectoriser, which would otherwise scatter across runs.
            let chunk = std::hint::black_box(chunk);
            let first = FIELD_BLOCK + (chunk * NOISE_LANES) as u32;
            let mut v = [[0; NOISE_LANES]; 4];
            v[0] = [self.key[0]; NOISE_LANES];
            v[1] = [self.key[1]; NOISE_LANES];
            v[2] = [j as u32; NOISE_LANES];
            for (l, block) in v[3].iter_mut().enumerate() {
                *block = first + l as u32;
            }
            pcg4d(&mut v);
            for (noise, word) in noise.chunks_exact_mut(NOISE_LANES).zip(&v) {
                for (u, &x) in noise.iter_mut().zip(word) {
                    *u = symmetric(x);
                }
            }
        }
        for (noise, field) in noise
            .chunks_exact(PIXELS)
            .zip(field.chunks_exact_mut(PIXELS))
        {
            smooth(noise, &self.taps, self.gain, field);
        }
    }

    /// The batch's record as warp.wgsl reads it (`RECORD_HEADER` words, then the taps; at most
    /// `RECORD_WORDS`): key, elastic, radius, strengths and gain as f32 bits, then the taps.
    pub fn record(&self) -> Vec<u32> {
        let mut words = vec![0u32; RECORD_HEADER + self.taps.len()];
        let [r, s, h, t] = self.strengths.map(f32::to_bits);
        let header = [
            self.key[0],
            self.key[1],
            self.elastic() as u32,
            (self.taps.len() / 2) as u32,
            r,
            s,
            h,
            t,
            self.gain.to_bits(),
        ];
        words[..header.len()].copy_from_slice(&header);
        for (word, tap) in words[RECORD_HEADER..].iter_mut().zip(&self.taps) {
            *word = tap.to_bits();
        }
        words
    }
}

/// The counter-based generator: four 32-bit words from (key, image, block) by `pcg4d`
/// (Jarzynski and Olano, "Hash Functions for GPU Rendering", 2020): two rounds of a PCG step
/// with the lanes multiplied into one another, integers only, so that WGSL and Rust give the
/// same bits. Chosen over Philox, which needs 32×32→64 products WGSL lacks.
pub fn draws(key: [u32; 2], image: u32, block: u32) -> [u32; 4] {
    let mut v = [[key[0]], [key[1]], [image], [block]];
    pcg4d(&mut v);
    v.map(|[x]| x)
}

/// `pcg4d` on N counters at once, lane by lane (so that the CPU's vector units take N blocks
/// together): v holds the four words of each lane.
#[inline(always)]
fn pcg4d<const N: usize>(v: &mut [[u32; N]; 4]) {
    for word in v.iter_mut() {
        word.iter_mut()
            .for_each(|x| *x = x.wrapping_mul(1664525).wrapping_add(1013904223));
    }
    let mix = |v: &mut [[u32; N]; 4]| {
        for l in 0..N {
            v[0][l] = v[0][l].wrapping_add(v[1][l].wrapping_mul(v[3][l]));
            v[1][l] = v[1][l].wrapping_add(v[2][l].wrapping_mul(v[0][l]));
            v[2][l] = v[2][l].wrapping_add(v[0][l].wrapping_mul(v[1][l]));
            v[3][l] = v[3][l].wrapping_add(v[1][l].wrapping_mul(v[2][l]));
        }
    };
    mix(v);
    for word in v.iter_mut() {
        word.iter_mut().for_each(|x| *x ^= *x >> 16);
    }
    mix(v);
}

/// A draw as a uniform number in [−1, 1): its top 24 bits, exactly.
#[inline(always)]
pub fn symmetric(x: u32) -> f32 {
    // Through i32 (exact below 2²⁴), a conversion every vector unit has.
    ((x >> 8) as i32) as f32 * (1.0 / 8_388_608.0) - 1.0
}

/// sin θ and cos θ by polynomials in f32, written out so that warp.wgsl computes the same
/// (WGSL's own sin and cos may be off by 2⁻¹¹): θ reduced by the nearest multiple of π/2 to
/// |r| ≤ π/4, Taylor terms to r¹¹ (truncation below 10⁻⁹; within 3·10⁻⁷ of the truth over a
/// turn, f32 rounding included), the quadrant swapping them.
pub fn sin_cos(theta: f32) -> (f32, f32) {
    let q = (theta * 0.63661975 + 0.5).floor();
    let r = theta - q * 1.5707964;
    let r2 = r * r;
    let s = r + r
        * r2
        * (-0.16666667
            + r2 * (0.008333334 + r2 * (-0.0001984127 + r2 * (2.7557319e-6 + r2 * -2.5052108e-8))));
    let c = 1.0
        + r2 * (-0.5
            + r2 * (0.041666668 + r2 * (-0.0013888889 + r2 * (2.4801588e-5 + r2 * -2.7557319e-7))));
    match (q as i32) & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// The normalised Gaussian of width `sigma`, truncated at 3σ: taps for offsets −R..=R.
pub fn gaussian_taps(sigma: f64) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().min(IMAGE_SIDE as f64) as i64;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|k| (-((k * k) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|v| (v / sum) as f32).collect()
}

/// One coordinate's field: `gain · (k ⊛ k ⊛ noise)`, noise (28, 28) smoothed along rows, then
/// columns, with the taps k (outside the image: 0), tap by tap in order, each a fused
/// multiply-add, s ← k·x + s (as warp.wgsl sums them). With gain α·√3/Σk² (`Warps::new`) the
/// RMS of smoothed uniform [−1, 1) noise (whose variance is (Σk²)²/3) is α away from the
/// edges.
///
/// Both passes read copies padded with zeros, so that every tap that can reach the image
/// (|o| ≤ 27) is whole vectors without a check: a tap on the padding adds k·0, which leaves a
/// sum as it was, so the sums are those of the taps inside, as the GPU's.
#[inline(always)]
fn smooth(noise: &[f32], taps: &[f32], gain: f32, field: &mut [f32]) {
    let mut padded = [[0.0f32; 3 * PAD]; IMAGE_SIDE];
    for r in 0..IMAGE_SIDE {
        // Opaque to the vectoriser, which would otherwise scatter across rows.
        let r = std::hint::black_box(r);
        let pixels = &noise[r * IMAGE_SIDE..(r + 1) * IMAGE_SIDE];
        padded[r][PAD..PAD + IMAGE_SIDE].copy_from_slice(pixels);
    }
    let mut rows = [[0.0f32; PAD]; IMAGE_SIDE + 2 * PAD];
    along_rows(&padded, taps, &mut rows[PAD..PAD + IMAGE_SIDE]);
    let mut smoothed = [[0.0f32; PAD]; IMAGE_SIDE];
    along_columns(&rows, taps, &mut smoothed);
    for (r, row) in smoothed.iter().enumerate() {
        // As above: no gathers across rows.
        let r = std::hint::black_box(r);
        let out = &mut field[r * IMAGE_SIDE..(r + 1) * IMAGE_SIDE];
        for (f, &v) in out.iter_mut().zip(&row[..IMAGE_SIDE]) {
            *f = v * gain;
        }
    }
}

/// The padding of `smooth`'s copies (32 zeros before a row or above the first), and the width
/// of their rows: 28 floats in whole vectors of 8 or 16.
const PAD: usize = 32;
/// The farthest a tap reaches into the image from one of its pixels.
const REACH: isize = IMAGE_SIDE as isize - 1;

/// `out[r][c]` = Σ_o k_o·x[r][c + o] over `image`'s rows (28 zeros-padded rows, the image's
/// from column PAD), four rows' sums in registers while the taps go by.
#[inline(always)]
fn along_rows(image: &[[f32; 3 * PAD]; IMAGE_SIDE], taps: &[f32], out: &mut [[f32; PAD]]) {
    const ROWS: usize = 4;
    let radius = (taps.len() / 2) as isize;
    for (out, image) in out.chunks_exact_mut(ROWS).zip(image.chunks_exact(ROWS)) {
        let mut sums = [[0.0f32; PAD]; ROWS];
        for (i, &k) in taps.iter().enumerate() {
            let o = i as isize - radius;
            if o.abs() <= REACH {
                let from = (PAD as isize + o) as usize;
                for (sums, row) in sums.iter_mut().zip(image) {
                    let row = &row[from..from + PAD];
                    sums.iter_mut()
                        .zip(row)
                        .for_each(|(s, &x)| *s = k.mul_add(x, *s));
                }
            }
        }
        out.copy_from_slice(&sums);
    }
}

/// `out[r]` = Σ_o k_o·x[r + o] over the rows of `image` (the image's from row PAD, zeros
/// above and below), four rows' sums in registers while the taps go by.
#[inline(always)]
fn along_columns(
    image: &[[f32; PAD]; IMAGE_SIDE + 2 * PAD],
    taps: &[f32],
    out: &mut [[f32; PAD]; IMAGE_SIDE],
) {
    const ROWS: usize = 4;
    let radius = (taps.len() / 2) as isize;
    for (block, out) in out.chunks_exact_mut(ROWS).enumerate() {
        let mut sums = [[0.0f32; PAD]; ROWS];
        for (i, &k) in taps.iter().enumerate() {
            let o = i as isize - radius;
            if o.abs() <= REACH {
                let from = (PAD as isize + (ROWS * block) as isize + o) as usize;
                for (sums, row) in sums.iter_mut().zip(&image[from..from + ROWS]) {
                    sums.iter_mut()
                        .zip(row)
                        .for_each(|(s, &x)| *s = k.mul_add(x, *s));
                }
            }
        }
        out.copy_from_slice(&sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha12Rng;

    #[test]
    fn augment_serde_reads_the_first_checkpoints_switch_and_round_trips_warps() {
        for (text, augment) in [
            ("false", Augment::Off),
            ("true", Augment::Shift),
            (
                r#"{"kind":"elastic","rotation":0.2,"scale":0.12,"shear":0.15,"translation":1.7,"elastic_alpha":1.0,"elastic_sigma":4.0}"#,
                Augment::Elastic(Distortion::default()),
            ),
        ] {
            let read: Augment = serde_json::from_str(text).unwrap();
            assert_eq!(read, augment);
            assert_eq!(serde_json::to_string(&read).unwrap(), text);
        }
        assert!(serde_json::from_str::<Augment>(r#"{"kind":"wobble"}"#).is_err());
    }

    /// The middle pixel and one near a corner: where the field's statistics are compared.
    const PIXELS_SEEN: [usize; 2] = [14 * IMAGE_SIDE + 14, 2 * IMAGE_SIDE + 3];

    /// `n` keyed batches' images of `augment`: (θ, s, h, ty, tx) per image, and the fields'
    /// values (both coordinates) at each of `PIXELS_SEEN`.
    fn keyed(augment: &Augment, n: usize) -> (Vec<[f64; 5]>, [Vec<f64>; 2]) {
        let mut warps = Warps::new(augment).unwrap();
        let (mut noise, mut field) = (vec![0.0; 2 * PIXELS], vec![0.0; 2 * PIXELS]);
        let (mut params, mut values) = (Vec::new(), [Vec::new(), Vec::new()]);
        for batch in 0..n / 100 {
            warps.for_batch(0x9e37_79b9_7f4a_7c15 ^ batch as u64, 100);
            for j in 0..100 {
                params.push(warps.parameters_of(j).map(f64::from));
                warps.field_of(j, &mut noise, &mut field);
                for (values, at) in values.iter_mut().zip(PIXELS_SEEN) {
                    values.extend([field[at] as f64, field[PIXELS + at] as f64]);
                }
            }
        }
        (params, values)
    }

    /// The warps as they were drawn before they were keyed: every parameter a ChaCha draw in
    /// f64, the field's noise in f32 draws, in this order, image after image.
    fn streamed(d: &Distortion, n: usize) -> (Vec<[f64; 5]>, [Vec<f64>; 2]) {
        let mut rng = ChaCha12Rng::seed_from_u64(7);
        let taps = gaussian_taps(d.elastic_sigma);
        let energy: f64 = taps.iter().map(|&k| (k as f64) * (k as f64)).sum();
        let gain = (d.elastic_alpha * 3f64.sqrt() / energy) as f32;
        let (mut noise, mut field) = (vec![0.0f32; PIXELS], vec![0.0f32; PIXELS]);
        let (mut params, mut values) = (Vec::new(), [Vec::new(), Vec::new()]);
        for _ in 0..n {
            let mut u = || 2.0 * rng.random::<f64>() - 1.0;
            let p = [
                d.rotation * u(),
                1.0 + d.scale * u(),
                d.shear * u(),
                d.translation * u(),
                d.translation * u(),
            ];
            params.push(p);
            for _coordinate in 0..2 {
                noise
                    .iter_mut()
                    .for_each(|v| *v = 2.0 * rng.random::<f32>() - 1.0);
                smooth(&noise, &taps, gain, &mut field);
                for (values, at) in values.iter_mut().zip(PIXELS_SEEN) {
                    values.push(field[at] as f64);
                }
            }
        }
        (params, values)
    }

    /// Two samples' histograms over `bins` equal bins spanning both: the largest difference of
    /// their cumulative shares (Kolmogorov–Smirnov's statistic, binned).
    fn largest_gap(a: &[f64], b: &[f64], bins: usize) -> f64 {
        let (a, b): (Vec<f64>, Vec<f64>) = (
            a.iter().copied().filter(|v| v.is_finite()).collect(),
            b.iter().copied().filter(|v| v.is_finite()).collect(),
        );
        let lo = a.iter().chain(&b).copied().fold(f64::INFINITY, f64::min);
        let hi = a
            .iter()
            .chain(&b)
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let histogram = |x: &[f64]| {
            let mut h = vec![0.0; bins];
            for &v in x {
                let bin = (((v - lo) / (hi - lo)) * bins as f64) as usize;
                h[bin.min(bins - 1)] += 1.0 / x.len() as f64;
            }
            h
        };
        let (ha, hb) = (histogram(&a), histogram(&b));
        let (mut ca, mut cb, mut gap) = (0.0, 0.0, 0.0f64);
        for (x, y) in ha.iter().zip(&hb) {
            (ca, cb) = (ca + x, cb + y);
            gap = gap.max((ca - cb).abs());
        }
        gap
    }

    /// The keyed warps against the stream they replace, 20,000 images each: every affine
    /// parameter's histogram and the field's values in the middle and near a corner agree
    /// (binned KS distance below 0.03, where 20,000 against 20,000 differ by 0.017 at the 1%
    /// level), and the field's RMS is α in the middle.
    #[test]
    fn keyed_warps_are_distributed_as_the_stream_they_replace() {
        let d = Distortion::default();
        let n = 20_000;
        let (new, new_fields) = keyed(&Augment::Elastic(d), n);
        let (old, old_fields) = streamed(&d, n);
        let names = ["rotation", "scale", "shear", "ty", "tx"];
        for (i, name) in names.iter().enumerate() {
            let a: Vec<f64> = new.iter().map(|p| p[i]).collect();
            let b: Vec<f64> = old.iter().map(|p| p[i]).collect();
            let gap = largest_gap(&a, &b, 40);
            assert!(gap < 0.03, "{name}: histograms differ by {gap}");
        }
        for ((new_field, old_field), at) in new_fields.iter().zip(&old_fields).zip(PIXELS_SEEN) {
            let gap = largest_gap(new_field, old_field, 40);
            assert!(
                gap < 0.03,
                "field at pixel {at}: histograms differ by {gap}"
            );
            let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            let (rn, ro) = (rms(new_field), rms(old_field));
            assert!((rn / ro - 1.0).abs() < 0.03, "field RMS {rn} against {ro}");
            if at == PIXELS_SEEN[0] {
                assert!((0.95..1.05).contains(&rn), "RMS in the middle {rn}");
            }
        }
    }

    /// Neighbouring draws are not alike: the correlation of consecutive noise values, of
    /// image j's and j + 1's, and of one key's and the next is near 0.
    #[test]
    fn draws_are_uncorrelated_along_every_counter() {
        let u = |key: u64, image: u32, block: u32, lane: usize| {
            symmetric(draws([key as u32, (key >> 32) as u32], image, block)[lane]) as f64
        };
        let correlation = |pairs: &[(f64, f64)]| {
            let n = pairs.len() as f64;
            let sum: f64 = pairs.iter().map(|(a, b)| a * b).sum();
            // Uniform in [−1, 1): variance 1/3.
            3.0 * sum / n
        };
        let n = 40_000u32;
        let along_lanes: Vec<_> = (0..n).map(|i| (u(5, 0, i, 0), u(5, 0, i, 1))).collect();
        let along_blocks: Vec<_> = (0..n).map(|i| (u(5, 0, i, 3), u(5, 0, i + 1, 0))).collect();
        let along_images: Vec<_> = (0..n).map(|i| (u(5, i, 2, 0), u(5, i + 1, 2, 0))).collect();
        let along_keys: Vec<_> = (0..n as u64)
            .map(|k| (u(k, 3, 2, 0), u(k + 1, 3, 2, 0)))
            .collect();
        for (what, pairs) in [
            ("lanes", along_lanes),
            ("blocks", along_blocks),
            ("images", along_images),
            ("keys", along_keys),
        ] {
            let r = correlation(&pairs);
            assert!(r.abs() < 0.02, "{what}: correlation {r}");
            let mean = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.len() as f64;
            assert!(mean.abs() < 0.015, "{what}: mean {mean}");
        }
    }

    /// The polynomial sine and cosine against f64's, over a turn each way (rotations beyond
    /// a turn lose more to the f32 reduction by π/2, as any f32 angle does).
    #[test]
    fn sin_cos_is_within_3e_7_of_the_truth_within_a_turn() {
        for i in -2026..=2026 {
            let theta = i as f32 * 0.0031;
            let (s, c) = sin_cos(theta);
            let (ws, wc) = (theta as f64).sin_cos();
            assert!((s as f64 - ws).abs() < 3e-7, "sin {theta}: {s} vs {ws}");
            assert!((c as f64 - wc).abs() < 3e-7, "cos {theta}: {c} vs {wc}");
        }
    }
}

//! `--augment affine|elastic`: the distortions a training image goes through, as both backends
//! and the training loop speak them. Neutral: the CPU twin (`cpu::ops::warp`) and the GPU kernel
//! (`shaders/warp.wgsl`) both read the `Warps` drawn here.
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
//! [−1, 1], smoothed by a Gaussian of σ pixels (separable, truncated at 3σ, the image's
//! outside drawing 0), scaled so that its RMS is `elastic_alpha` pixels.
//!
//! Everything is drawn on the host from the run's augmentation stream (the one `--augment`'s
//! shifts use), whose position the checkpoint stores: a run is bit-identical run to run and
//! resumes exactly, and the GPU reads the same numbers as the CPU.

use rand::Rng;
use rand_chacha::ChaCha12Rng;
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

/// A batch's warps: an affine map per image, and for `elastic` a displacement field per image,
/// (2, 784) each (dy for every pixel, then dx); empty otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Warps {
    pub affine: Vec<Affine>,
    pub field: Vec<f32>,
}

impl Warps {
    pub fn len(&self) -> usize {
        self.affine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.affine.is_empty()
    }

    /// Image j's field, (2, 784), if the warps are elastic.
    pub fn field_of(&self, j: usize) -> Option<&[f32]> {
        (!self.field.is_empty()).then(|| &self.field[2 * PIXELS * j..][..2 * PIXELS])
    }
}

/// A uniform draw in [−1, 1).
fn symmetric(rng: &mut ChaCha12Rng) -> f64 {
    2.0 * rng.random::<f64>() - 1.0
}

/// A uniform draw in [−1, 1), in f32: the fields' noise, 1,568 draws an image.
fn symmetric_f32(rng: &mut ChaCha12Rng) -> f32 {
    2.0 * rng.random::<f32>() - 1.0
}

/// Draws the warps of a batch of `len` images for `augment` (affine or elastic) into `warps`:
/// per image θ, s, h, ty, tx in that order, then its field (elastic).
pub fn draw_warps(rng: &mut ChaCha12Rng, augment: &Augment, len: usize, warps: &mut Warps) {
    warps.affine.clear();
    warps.field.clear();
    let Some(d) = augment.distortion() else {
        return;
    };
    let elastic = matches!(augment, Augment::Elastic(_));
    let taps = gaussian_taps(d.elastic_sigma);
    let mut noise = vec![0.0f32; PIXELS];
    for _ in 0..len {
        let theta = d.rotation * symmetric(rng);
        let s = 1.0 + d.scale * symmetric(rng);
        let h = d.shear * symmetric(rng);
        let t = [
            d.translation * symmetric(rng),
            d.translation * symmetric(rng),
        ];
        let (sin, cos) = theta.sin_cos();
        // R(θ)·H(h) / s, H = [[1, 0], [h, 1]] acting on (y, x).
        let a = [(cos - sin * h) / s, -sin / s, (sin + cos * h) / s, cos / s];
        warps.affine.push(Affine {
            a: a.map(|v| v as f32),
            t: t.map(|v| v as f32),
        });
        if elastic {
            for _coordinate in 0..2 {
                noise.iter_mut().for_each(|v| *v = symmetric_f32(rng));
                let start = warps.field.len();
                warps.field.resize(start + PIXELS, 0.0);
                smooth(&noise, &taps, d.elastic_alpha, &mut warps.field[start..]);
            }
        }
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

/// field = α·√3/Σk² · (k ⊛ k ⊛ noise): noise (28, 28) smoothed along rows, then columns, with
/// the taps k (outside the image: 0); the factor makes the RMS of smoothed uniform [−1, 1]
/// noise (whose variance is (Σk²)²/3) equal to α away from the edges.
fn smooth(noise: &[f32], taps: &[f32], alpha: f64, field: &mut [f32]) {
    let energy: f64 = taps.iter().map(|&k| (k as f64) * (k as f64)).sum();
    let gain = (alpha * 3f64.sqrt() / energy) as f32;
    let mut rows = [0.0f32; PIXELS];
    // Along each row: element c of a row gathers c + o; along each column: row r gathers row
    // r + o. Tap by tap over contiguous runs, so that the sums vectorise.
    for (row_out, row_in) in rows
        .chunks_exact_mut(IMAGE_SIDE)
        .zip(noise.chunks_exact(IMAGE_SIDE))
    {
        for_each_tap(taps, |k, to, from, n| {
            let (dst, src) = (&mut row_out[to..to + n], &row_in[from..from + n]);
            dst.iter_mut().zip(src).for_each(|(d, &x)| *d += k * x);
        });
    }
    field.fill(0.0);
    for_each_tap(taps, |k, to, from, n| {
        let side = IMAGE_SIDE;
        let dst = &mut field[to * side..(to + n) * side];
        let src = &rows[from * side..(from + n) * side];
        dst.iter_mut().zip(src).for_each(|(d, &x)| *d += k * x);
    });
    field.iter_mut().for_each(|v| *v *= gain);
}

/// For each tap k at offset o, the run of positions along a 28-long axis whose input (position
/// + o) lies inside: `add(k, first output, first input, length)`.
fn for_each_tap(taps: &[f32], mut add: impl FnMut(f32, usize, usize, usize)) {
    let (side, radius) = (IMAGE_SIDE as isize, (taps.len() / 2) as isize);
    for (i, &k) in taps.iter().enumerate() {
        let o = i as isize - radius;
        let (lo, hi) = (0.max(-o), side.min(side - o));
        if lo < hi {
            add(k, lo as usize, (lo + o) as usize, (hi - lo) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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

    #[test]
    fn elastic_field_has_the_asked_rms_in_the_middle() {
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let mut warps = Warps::default();
        let augment = Augment::Elastic(Distortion::default());
        draw_warps(&mut rng, &augment, 200, &mut warps);
        assert_eq!(warps.field.len(), 200 * 2 * PIXELS);
        // The middle pixel of every image, both coordinates: RMS ≈ α = 1 (edges see less).
        let middle = 14 * IMAGE_SIDE + 14;
        let squares: f64 = (0..400)
            .map(|i| warps.field[i * PIXELS + middle] as f64)
            .map(|v| v * v)
            .sum();
        let rms = (squares / 400.0).sqrt();
        assert!((0.8..1.2).contains(&rms), "RMS {rms}");
    }
}

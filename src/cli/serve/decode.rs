//! `/api/predict`'s bodies, decoded into what the model reads: the images' grey levels, 784
//! bytes an image, one after another. Which decoder runs is chosen by the body's media type,
//! in one place (`Media`):
//! - `application/octet-stream`: N × 784 bytes, the images as they are (N from 1 to
//!   `MAX_IMAGES`); the answer is always a list.
//! - `image/png`, `image/jpeg`: one picture of any size and colour, prepared as MNIST's digits
//!   were (`data::picture`: a light background inverted, cropped, scaled into 20×20, centred);
//!   its answer says whether it was inverted and carries the 784 pixels the model saw.
//! - anything else, or none: JSON, `{"pixels": [784 numbers 0–255]}` or `{"images": [[784
//!   numbers], …]}` (what every body was before the media type was read, so `curl -d` works).
//!
//! ## Design
//! JSON is read straight into bytes as the parser goes (a serde visitor over the body's
//! bytes), never into a tree of `serde_json::Value`s: a tree of 784,000 numbers took about
//! nine bytes of memory for every byte of JSON, where the bytes take a third of one. Every
//! check is made on the way, so a bad number is refused where it is met.
//!
//! Images sent as pixels (JSON or binary) are taken as MNIST's: one whose background is bright
//! (dark ink on paper, unprepared) is answered all the same, with a `warning` (`WARN_BRIGHT`),
//! since the model has never seen one; an uploaded picture is inverted instead.

use std::cell::RefCell;
use std::fmt;

use axum::http::{header, HeaderMap, StatusCode};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{bad, Refusal, MAX_IMAGES};
use mnist_gpu::data::{picture, PIXELS};

/// How a body is decoded, by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    Binary,
    /// A PNG or JPEG picture.
    Picture,
}

/// The images a body holds, and how they are answered.
pub struct Decoded {
    /// 784 bytes an image, one after another.
    pub pixels: Vec<u8>,
    /// A list of answers (`images`, binary bodies), or one (`pixels`).
    pub batch: bool,
    /// Per image, a warning to answer with (None: none); empty when no image has one.
    pub warnings: Vec<Option<String>>,
    /// For a picture: whether its light background was inverted. None for pixels.
    pub inverted: Option<bool>,
}

/// The warning an image sent as pixels gets when its background is bright.
pub const WARN_BRIGHT: &str = "the background is bright (dark ink on light paper?): MNIST's \
                               digits are light on black, so this answer is likely wrong; \
                               invert the image, or send the picture as image/png or image/jpeg \
                               to have it prepared";

const USAGE: &str = "expected {\"pixels\": [784 numbers 0–255]} or {\"images\": [[784 numbers], \
                     …]}, or 784 bytes an image as application/octet-stream";

impl Media {
    /// The decoder for the body's `Content-Type`.
    pub fn of(headers: &HeaderMap) -> Result<Media, Refusal> {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = given.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/octet-stream" => Ok(Media::Binary),
            "image/png" | "image/jpeg" => Ok(Media::Picture),
            other if other.starts_with("image/") => Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported media type {essence}: pictures are read as image/png or \
                     image/jpeg"
                ),
            )),
            _ => Ok(Media::Json),
        }
    }

    /// Refuses, before it is read, a body whose declared length cannot be right (binary only:
    /// a JSON body's length says nothing of its images).
    pub fn check_length(self, declared: Option<usize>) -> Result<(), Refusal> {
        match (self, declared) {
            (Media::Binary, Some(n)) => binary_images(n).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The body's images; those sent as pixels with a bright background warned of.
    pub fn decode(self, body: Vec<u8>) -> Result<Decoded, Refusal> {
        let decoded = match self {
            Media::Json => json_images(&body)?,
            Media::Binary => {
                binary_images(body.len())?;
                Decoded {
                    pixels: body,
                    batch: true,
                    warnings: Vec::new(),
                    inverted: None,
                }
            }
            Media::Picture => return picture_image(&body),
        };
        Ok(with_bright_warnings(decoded))
    }
}

/// An uploaded PNG or JPEG as the 784 pixels MNIST's preprocessing makes of it.
pub fn picture_image(body: &[u8]) -> Result<Decoded, Refusal> {
    let prepared =
        picture::prepare(body, "the uploaded picture").map_err(|e| bad(e.to_string()))?;
    Ok(Decoded {
        pixels: prepared.pixels,
        batch: false,
        warnings: Vec::new(),
        inverted: Some(prepared.inverted),
    })
}

/// `decoded` with `WARN_BRIGHT` for each image whose background is bright (none: no list).
fn with_bright_warnings(mut decoded: Decoded) -> Decoded {
    let flagged: Vec<bool> = decoded
        .pixels
        .chunks_exact(PIXELS)
        .map(picture::bright_background)
        .collect();
    if flagged.contains(&true) {
        decoded.warnings = flagged
            .into_iter()
            .map(|bright| bright.then(|| WARN_BRIGHT.to_string()))
            .collect();
    }
    decoded
}

/// How many images a binary body of `n` bytes holds: refused unless 1 to `MAX_IMAGES` whole
/// ones.
fn binary_images(n: usize) -> Result<usize, Refusal> {
    if n == 0 {
        return Err(bad(format!(
            "the body is empty: send 784 bytes an image (application/octet-stream), 1 to \
             {MAX_IMAGES} images"
        )));
    }
    if !n.is_multiple_of(PIXELS) {
        return Err(bad(format!(
            "the body is {n} bytes, not a whole number of 784-byte images \
             (application/octet-stream)"
        )));
    }
    let images = n / PIXELS;
    if images > MAX_IMAGES {
        return Err(bad(format!(
            "the body holds {images} images; send 1 to {MAX_IMAGES} a request"
        )));
    }
    Ok(images)
}

/// A JSON body's images: one (`pixels`) or a batch (`images`). The usual shape is read by
/// `usual_json`; anything else by serde's parser, through the visitors below. A refusal met
/// while parsing is kept in `refused`, and the parser is stopped with an empty error; any other
/// error of the parser's is the body's JSON.
fn json_images(body: &[u8]) -> Result<Decoded, Refusal> {
    if let Some(decoded) = usual_json(body) {
        return Ok(decoded);
    }
    let refused = RefCell::new(None);
    let mut out = Parsed {
        pixels: Vec::new(),
        single: Slot::Absent,
        batch: Slot::Absent,
    };
    let mut parser = serde_json::Deserializer::from_slice(body);
    let parsed = Top {
        out: &mut out,
        refused: &refused,
    }
    .deserialize(&mut parser)
    .and_then(|()| parser.end());
    if let Some(refusal) = refused.into_inner() {
        return Err(refusal);
    }
    parsed.map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    match (out.single, out.batch) {
        (Slot::Array, Slot::Absent) => Ok(Decoded {
            pixels: out.pixels,
            batch: false,
            warnings: Vec::new(),
            inverted: None,
        }),
        (Slot::Absent, Slot::Array) => Ok(Decoded {
            pixels: out.pixels,
            batch: true,
            warnings: Vec::new(),
            inverted: None,
        }),
        _ => Err(bad(USAGE)),
    }
}

/// The usual body, read byte by byte at about ten times the speed of the general parser:
/// `{"pixels": IMAGE}` or `{"images": [IMAGE, …]}` (1 to `MAX_IMAGES`), an IMAGE being 784
/// whole numbers 0–255 written plainly (no sign, fraction or exponent), whose brightest is not
/// 1; JSON's whitespace anywhere between. None for any other body, which the general parser
/// then reads: every body this accepts, it reads as that parser would.
fn usual_json(body: &[u8]) -> Option<Decoded> {
    let mut at = Cursor { bytes: body, at: 0 };
    at.eat(b'{')?;
    at.eat(b'"')?;
    let batch = if at.rest().starts_with(b"pixels\"") {
        false
    } else if at.rest().starts_with(b"images\"") {
        true
    } else {
        return None;
    };
    at.at += 7;
    at.eat(b':')?;
    let mut pixels = Vec::new();
    if batch {
        at.eat(b'[')?;
        pixels.reserve(PIXELS * (body.len() / (2 * PIXELS)).clamp(1, MAX_IMAGES));
        loop {
            at.image(&mut pixels)?;
            if pixels.len() > PIXELS * MAX_IMAGES {
                return None;
            }
            if at.eat(b',').is_none() {
                break;
            }
        }
        at.eat(b']')?;
    } else {
        pixels.reserve(PIXELS);
        at.image(&mut pixels)?;
    }
    at.eat(b'}')?;
    at.space();
    (at.at == body.len()).then_some(Decoded {
        pixels,
        batch,
        warnings: Vec::new(),
        inverted: None,
    })
}

/// A place in a body `usual_json` reads.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    /// Past JSON's whitespace.
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Past whitespace and `c`; None where `c` is not next.
    fn eat(&mut self, c: u8) -> Option<()> {
        self.space();
        (self.bytes.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// A whole number 0–255, written plainly (a leading zero only in 0 itself).
    fn level(&mut self) -> Option<u8> {
        self.space();
        let digit = |at: usize| self.bytes.get(at).filter(|b| b.is_ascii_digit());
        let first = *digit(self.at)?;
        self.at += 1;
        let mut value = u32::from(first - b'0');
        if value != 0 {
            while let Some(&d) = digit(self.at) {
                value = 10 * value + u32::from(d - b'0');
                self.at += 1;
                if value > 255 {
                    return None;
                }
            }
        }
        match digit(self.at) {
            Some(_) => None,
            None => u8::try_from(value).ok(),
        }
    }

    /// An image: `[` 784 levels `]`, appended to `out`; None where its brightest is 1 (the
    /// general parser refuses it as scaled to 0–1).
    fn image(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.eat(b'[')?;
        let mut brightest = 0;
        for i in 0..PIXELS {
            if i > 0 {
                self.eat(b',')?;
            }
            let level = self.level()?;
            brightest = brightest.max(level);
            out.push(level);
        }
        self.eat(b']')?;
        (brightest != 1).then_some(())
    }
}

/// What the body's `pixels` and `images` were: missing (or null), a list, or something else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Absent,
    Array,
    Other,
}

struct Parsed {
    pixels: Vec<u8>,
    single: Slot,
    batch: Slot,
}

/// Stops the parser with `refusal` (see `json_images`).
fn refuse<E: de::Error>(refused: &RefCell<Option<Refusal>>, refusal: Refusal) -> E {
    *refused.borrow_mut() = Some(refusal);
    E::custom("")
}

/// The whole body: an object whose `pixels` or `images` are read, other keys skipped; any
/// other JSON value is read through (it must still be JSON) and then refused with the usage.
struct Top<'a> {
    out: &'a mut Parsed,
    refused: &'a RefCell<Option<Refusal>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let batch = match key.as_ref() {
                "pixels" => false,
                "images" => true,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let slot = map.next_value_seed(Field {
                batch,
                taken: self.out.single == Slot::Array || self.out.batch == Slot::Array,
                out: &mut self.out.pixels,
                refused: self.refused,
            })?;
            *(if batch {
                &mut self.out.batch
            } else {
                &mut self.out.single
            }) = slot;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The value of `pixels` (one image) or `images` (a list of them).
struct Field<'a> {
    batch: bool,
    /// Whether a list was read already: a second one (both keys, or one twice) is refused.
    taken: bool,
    out: &'a mut Vec<u8>,
    refused: &'a RefCell<Option<Refusal>>,
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Slot;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Slot;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Slot, A::Error> {
        if self.taken {
            return Err(refuse(self.refused, bad(USAGE)));
        }
        if !self.batch {
            Image::new("pixels".into(), self.out, self.refused).read(&mut seq)?;
            return Ok(Slot::Array);
        }
        let mut count = 0;
        while count < MAX_IMAGES {
            let image = Image::new(format!("images[{count}]"), self.out, self.refused);
            if seq.next_element_seed(image)?.is_none() {
                break;
            }
            count += 1;
        }
        // Past the most: counted (to say how many), not read.
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        if count == 0 || count > MAX_IMAGES {
            let refusal = bad(format!("images: {count} images; send 1 to {MAX_IMAGES}"));
            return Err(refuse(self.refused, refusal));
        }
        Ok(Slot::Array)
    }

    fn visit_unit<E>(self) -> Result<Slot, E> {
        Ok(Slot::Absent)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Slot::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Slot, E> {
        Ok(Slot::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Slot, E> {
        Ok(Slot::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Slot, E> {
        Ok(Slot::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Slot, E> {
        Ok(Slot::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Slot, E> {
        Ok(Slot::Other)
    }
}

/// One image: 784 numbers in 0–255, rounded to whole grey levels and appended to `out`. An
/// image whose brightest pixel is 1 or less, yet not black, was scaled to 0–1 (torchvision's
/// `ToTensor()`): read as grey levels it is a black image, and would be classified as one, so
/// it is refused with the fix.
struct Image<'a> {
    name: String,
    out: &'a mut Vec<u8>,
    refused: &'a RefCell<Option<Refusal>>,
}

impl<'a> Image<'a> {
    fn new(name: String, out: &'a mut Vec<u8>, refused: &'a RefCell<Option<Refusal>>) -> Self {
        Image { name, out, refused }
    }

    /// Reads the list's numbers (the image's pixels) and checks them.
    fn read<'de, A: SeqAccess<'de>>(self, seq: &mut A) -> Result<(), A::Error> {
        let start = self.out.len();
        let mut brightest = 0.0f64;
        let mut count = 0;
        loop {
            let level = Level {
                name: &self.name,
                at: count,
                refused: self.refused,
            };
            let Some(x) = seq.next_element_seed(level)? else {
                break;
            };
            if count < PIXELS {
                self.out.push(x.round() as u8);
                brightest = brightest.max(x);
            }
            count += 1;
        }
        let refusal = if count != PIXELS {
            bad(format!("{}: {count} numbers, expected {PIXELS}", self.name))
        } else if brightest > 0.0 && brightest <= 1.0 {
            bad(format!(
                "{}: the brightest pixel is {brightest}: pixels look scaled to 0–1 (as \
                 torchvision's ToTensor() does), but grey levels 0–255 are expected: multiply \
                 by 255",
                self.name
            ))
        } else {
            debug_assert_eq!(self.out.len(), start + PIXELS);
            return Ok(());
        };
        Err(refuse(self.refused, refusal))
    }
}

impl<'de> DeserializeSeed<'de> for Image<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Image<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.read(&mut seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_list())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_list())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_a_list())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_a_list())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_a_list())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.not_a_list())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_list())
    }
}

impl Image<'_> {
    fn not_a_list<E: de::Error>(&self) -> E {
        refuse(
            self.refused,
            bad(format!("{}: not a list of numbers", self.name)),
        )
    }
}

/// One pixel: a number in 0–255.
struct Level<'a> {
    name: &'a str,
    at: usize,
    refused: &'a RefCell<Option<Refusal>>,
}

impl Level<'_> {
    fn number<E: de::Error>(&self, x: f64) -> Result<f64, E> {
        if (0.0..=255.0).contains(&x) {
            return Ok(x);
        }
        let refusal = bad(format!("{}[{}]: {x} is outside 0–255", self.name, self.at));
        Err(refuse(self.refused, refusal))
    }

    /// Refuses a value that is not a number, shown as JSON.
    fn not_a_number<E: de::Error>(&self, shown: impl fmt::Display) -> E {
        let refusal = bad(format!(
            "{}[{}]: {shown} is not a number",
            self.name, self.at
        ));
        refuse(self.refused, refusal)
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.number(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.number(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        self.number(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        Err(self.not_a_number(serde_json::Value::from(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<f64, E> {
        Err(self.not_a_number(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Err(self.not_a_number("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.not_a_number("a list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<f64, A::Error> {
        Err(self.not_a_number("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(body: &str) -> String {
        match json_images(body.as_bytes()) {
            Ok(_) => panic!("{body}: accepted"),
            Err(refusal) => refusal.message,
        }
    }

    fn image(value: u64) -> Vec<u64> {
        vec![value; PIXELS]
    }

    #[test]
    fn bodies_read_into_bytes() {
        let mut one = image(0);
        one[3] = 255;
        one[4] = 12;
        let body = json!({"pixels": one, "other": {"x": [1, "y"]}}).to_string();
        let d = json_images(body.as_bytes()).unwrap_or_else(|r| panic!("{}", r.message));
        assert!(!d.batch);
        assert_eq!(
            (d.pixels.len(), d.pixels[3], d.pixels[4]),
            (PIXELS, 255, 12)
        );
        let body = json!({"images": [image(7), image(200)], "pixels": null}).to_string();
        let d = json_images(body.as_bytes()).unwrap_or_else(|r| panic!("{}", r.message));
        assert!(d.batch);
        assert_eq!((d.pixels.len(), d.pixels[PIXELS]), (2 * PIXELS, 200));
        let rounded = json!({"pixels": vec![12.6; PIXELS]}).to_string();
        assert_eq!(json_images(rounded.as_bytes()).ok().unwrap().pixels[0], 13);
    }

    #[test]
    fn bad_bodies_are_refused_as_before() {
        let mut out_of_range = image(0);
        out_of_range[100] = 256;
        let cases = [
            (
                json!({"pixels": image(0)[..783]}).to_string(),
                "pixels: 783 numbers, expected 784",
            ),
            (
                json!({"pixels": out_of_range}).to_string(),
                "pixels[100]: 256 is outside 0–255",
            ),
            (
                json!({"pixels": vec!["x"; 784]}).to_string(),
                "pixels[0]: \"x\" is not a number",
            ),
            (
                json!({"pixels": vec![-1; 784]}).to_string(),
                "pixels[0]: -1 is outside 0–255",
            ),
            (
                json!({"images": [image(0), 5]}).to_string(),
                "images[1]: not a list of numbers",
            ),
            (
                json!({"images": []}).to_string(),
                "images: 0 images; send 1 to 1000",
            ),
            (
                json!({"images": vec![[0]; 1001]}).to_string(),
                "images[0]: 1 numbers",
            ),
            (json!({"pixels": "x"}).to_string(), "expected {\"pixels\""),
            (json!({"image": []}).to_string(), "expected {\"pixels\""),
            (json!([1, 2]).to_string(), "expected {\"pixels\""),
            (
                json!({"pixels": image(0), "images": [image(0)]}).to_string(),
                "expected {",
            ),
            (
                "{\"pixels\": [0, 0".to_string(),
                "the body is not JSON: EOF",
            ),
            ("pixels=0".to_string(), "the body is not JSON"),
            (
                json!({"pixels": image(0)}).to_string() + "x",
                "the body is not JSON",
            ),
        ];
        for (body, says) in cases {
            let e = error(&body);
            assert!(
                e.starts_with(says),
                "{e:?} for {}",
                &body[..body.len().min(80)]
            );
        }
        let many: Vec<Vec<u64>> = (0..1001).map(|_| image(0)).collect();
        let e = error(&json!({ "images": many }).to_string());
        assert_eq!(e, "images: 1001 images; send 1 to 1000");
        let scaled = json!({"images": [image(0), vec![0.5; PIXELS]]}).to_string();
        assert!(error(&scaled)
            .starts_with("images[1]: the brightest pixel is 0.5: pixels look scaled to 0–1"));
    }

    /// The general reader alone.
    fn general(body: &str) -> Result<Decoded, Refusal> {
        let refused = RefCell::new(None);
        let mut out = Parsed {
            pixels: Vec::new(),
            single: Slot::Absent,
            batch: Slot::Absent,
        };
        let mut parser = serde_json::Deserializer::from_slice(body.as_bytes());
        let top = Top {
            out: &mut out,
            refused: &refused,
        };
        let parsed = top.deserialize(&mut parser).and_then(|()| parser.end());
        if let Some(refusal) = refused.into_inner() {
            return Err(refusal);
        }
        parsed.map_err(|e| bad(e.to_string()))?;
        let batch = out.batch == Slot::Array;
        Ok(Decoded {
            pixels: out.pixels,
            batch,
            warnings: Vec::new(),
            inverted: None,
        })
    }

    #[test]
    fn the_usual_bodies_read_as_the_general_parser_reads_them() {
        let mut varied = image(0);
        for (i, p) in varied.iter_mut().enumerate() {
            *p = (i * 37 % 256) as u64;
        }
        let spaced = format!(
            " {{ \"images\" :\n[ {} ,\t{} ] }}\r\n",
            serde_json::to_string_pretty(&varied).unwrap(),
            json!(image(255))
        );
        let accepted = [
            json!({"pixels": varied}).to_string(),
            json!({"images": [varied, image(0), image(2)]}).to_string(),
            spaced,
        ];
        for body in &accepted {
            let fast = usual_json(body.as_bytes()).expect("the usual shape");
            let slow = general(body).unwrap_or_else(|r| panic!("{}", r.message));
            assert_eq!((fast.pixels, fast.batch), (slow.pixels, slow.batch));
        }
        let mut ones = image(0);
        ones[5] = 1;
        let others = [
            json!({"pixels": ones}).to_string(),
            json!({"pixels": vec![1.0; PIXELS]}).to_string(),
            json!({"pixels": image(256)}).to_string(),
            json!({"pixels": image(0), "x": 1}).to_string(),
            json!({"pixels": image(0)[..783]}).to_string(),
            json!({"images": []}).to_string(),
            json!({"images": vec![image(3); 1001]}).to_string(),
            json!({"pixels": image(0)})
                .to_string()
                .replace(",0,", ",00,"),
            json!({"pixels": image(0)}).to_string() + "x",
            "{\"pix\\u0065ls\": []}".to_string(),
        ];
        for body in &others {
            assert!(
                usual_json(body.as_bytes()).is_none(),
                "{}",
                &body[..60.min(body.len())]
            );
        }
    }

    #[test]
    fn binary_bodies_are_whole_images() {
        assert_eq!(binary_images(PIXELS * 3).ok(), Some(3));
        for (n, says) in [
            (0, "the body is empty"),
            (
                PIXELS + 1,
                "785 bytes, not a whole number of 784-byte images",
            ),
            (PIXELS * 1001, "holds 1001 images; send 1 to 1000"),
        ] {
            let e = binary_images(n).err().unwrap().message;
            assert!(e.contains(says), "{e}");
        }
    }
}

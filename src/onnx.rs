//! ONNX out: a model as a standard ONNX file, which onnxruntime (and onnxruntime-web), OpenCV's
//! DNN module, TensorRT and Netron open.
//!
//! The graph, for a model with L layers:
//!
//! ```text
//! pixels: float32 [N, 784]   raw grey levels 0–255, row by row, ink bright (as MNIST)
//!   Mul(pixel_scale)         × PIXEL_SCALE, the f32 the trainer multiplies by    → x
//!   Gemm(W1, b1, transB=1)   x·W1ᵀ + b1                                          → z1
//!   Relu or Elu(alpha=1)                                                          → a1
//!   …
//!   Gemm(WL, bL, transB=1)                                                        → logits
//!   Softmax(axis=1)
//! probabilities: float32 [N, 10]
//! ```
//!
//! The initializers `W1`, `b1`, … are the model's tensors as in the safetensors file: `transB`
//! lets `W[l]` keep its (outputs, inputs) layout. Samples are rows here (ONNX's convention), where
//! the trainer's math has them as columns: `Z[l]ᵀ = A[l-1]ᵀ·W[l]ᵀ + b[l]`.
//!
//! Operator set 17 (ONNX 1.12, IR version 8), because every runtime above reads it: TensorRT
//! from 8.6 (still widely deployed, and reading no set past 17), onnxruntime and onnxruntime-web
//! from 1.12 (2022), OpenCV's importer (which goes by the operators, five common ones here),
//! tract (tested on sets 9 to 18). It is new enough that Softmax normalises one axis (13 and
//! later) rather than flattened trailing dimensions; 18 changes none of the five operators.
//!
//! The file is protobuf, written by the small encoder below (`Message`) holding just the
//! messages and fields this graph uses, numbered as in onnx.proto (`field`): a code generator
//! would add a build step and a dependency for a dozen messages.

use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{CLASSES, PIXELS};
use crate::error::Result;
use crate::model::{Activation, Model, PIXEL_SCALE};
use crate::model_file::write_atomically;

/// The operator set of the default domain the graph is written for (see the module's notes).
pub const OPSET: i64 = 17;
/// The IR version of ONNX 1.12, the release that introduced operator set 17.
pub const IR_VERSION: i64 = 8;
/// The graph's input: float32 [N, 784] raw pixels 0–255.
pub const INPUT: &str = "pixels";
/// The graph's output: float32 [N, 10] probabilities.
pub const OUTPUT: &str = "probabilities";
/// The name of the batch dimension, which the runtime sets from the input it is given.
pub const BATCH: &str = "N";
/// The `producer_name` the file carries.
pub const PRODUCER: &str = "mnist-gpu";

/// The ONNX bytes of `model`. `metadata` is the model file's (the run's options, command and
/// accuracies): each entry becomes one of the file's `metadata_props`, and the doc string
/// (`describe`) says what they mean.
pub fn encode(model: &Model, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let opset = Message::default()
        .string(field::opset_id::DOMAIN, "")
        .int(field::opset_id::VERSION, OPSET);
    let props = properties(model, metadata).into_iter().map(|(key, value)| {
        Message::default()
            .string(field::string_entry::KEY, &key)
            .string(field::string_entry::VALUE, &value)
    });
    Message::default()
        .int(field::model::IR_VERSION, IR_VERSION)
        .message(field::model::OPSET_IMPORT, opset)
        .string(field::model::PRODUCER_NAME, PRODUCER)
        .string(field::model::PRODUCER_VERSION, env!("CARGO_PKG_VERSION"))
        .string(field::model::DOC_STRING, &describe(model, metadata))
        .message(field::model::GRAPH, graph(model))
        .messages(field::model::METADATA_PROPS, props)
        .into_bytes()
}

/// Writes `encode`'s bytes to `path`, whole or not at all (as `--save` writes).
pub fn save(path: &Path, model: &Model, metadata: &BTreeMap<String, String>) -> Result<()> {
    write_atomically(path, &encode(model, metadata))
}

/// The file's `metadata_props`: the model file's metadata, with the network's shape as the
/// weights have it (`inputs`, `hidden`, `outputs`, `activation`), which a file without metadata
/// lacks.
fn properties(model: &Model, metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut props = metadata.clone();
    props.insert("inputs".into(), PIXELS.to_string());
    props.insert("hidden".into(), widths(model));
    props.insert("outputs".into(), CLASSES.to_string());
    props.insert("activation".into(), model.activation.name().into());
    props
}

/// `784-16-10` for a model with one hidden layer of 16.
fn shape_name(model: &Model) -> String {
    format!("{PIXELS}-{}-{CLASSES}", widths(model).replace(',', "-"))
}

/// The hidden widths, comma-separated, as the model file's `hidden`.
fn widths(model: &Model) -> String {
    let widths: Vec<String> = model.hidden().iter().map(|h| h.to_string()).collect();
    widths.join(",")
}

/// The model's doc string: the network, what goes in and comes out, and the run that trained
/// it as far as `metadata` tells.
pub fn describe(model: &Model, metadata: &BTreeMap<String, String>) -> String {
    let activation = match model.activation {
        Activation::Relu => "ReLU",
        Activation::Elu => "ELU (alpha 1)",
    };
    let mut lines = vec![
        format!(
            "MNIST digit classifier {}: dense layers with {activation} between them and a \
             softmax at the end, exported by {PRODUCER} {}.",
            shape_name(model),
            env!("CARGO_PKG_VERSION")
        ),
        format!(
            "Input {INPUT}: float32 [{BATCH}, {PIXELS}], one 28x28 image per row, its pixels row \
             by row as raw grey levels 0-255 with the ink bright (as in MNIST); the graph scales \
             them to 0-1 as the trainer does."
        ),
        format!(
            "Output {OUTPUT}: float32 [{BATCH}, {CLASSES}], the probability of each digit 0-9."
        ),
    ];
    for (key, label) in [
        ("command", "Command"),
        ("options", "Options"),
        ("steps", "Steps"),
        ("test_accuracy", "Test accuracy"),
        ("dev_accuracy", "Dev accuracy"),
    ] {
        if let Some(value) = metadata.get(key) {
            lines.push(format!("{label}: {value}"));
        }
    }
    lines.join("\n")
}

/// The graph: the scaling, a Gemm per layer with the activation between, the softmax; its
/// input, output and (for Netron and the runtimes' shape checks) every tensor between.
fn graph(model: &Model) -> Message {
    let last = model.layers.len() - 1;
    let mut nodes = vec![node("Mul", "scale", &[INPUT, "pixel_scale"], "x", vec![])];
    let mut initializers = vec![initializer("pixel_scale", &[1], &[PIXEL_SCALE])];
    let mut between = vec![value_info("x", PIXELS, "the pixels scaled to 0-1")];
    let mut previous = "x".to_string();
    for (l, layer) in model.layers.iter().enumerate() {
        let (w, b) = (format!("W{}", l + 1), format!("b{}", l + 1));
        initializers.push(initializer(&w, &[layer.outputs, layer.inputs], &layer.w));
        initializers.push(initializer(&b, &[layer.outputs], &layer.b));
        let z = if l == last {
            "logits".to_string()
        } else {
            format!("z{}", l + 1)
        };
        let transpose_w = int_attribute("transB", 1);
        nodes.push(node(
            "Gemm",
            &format!("dense{}", l + 1),
            &[&previous, &w, &b],
            &z,
            vec![transpose_w],
        ));
        between.push(value_info(&z, layer.outputs, ""));
        if l == last {
            let axis = int_attribute("axis", 1);
            nodes.push(node("Softmax", "softmax", &[&z], OUTPUT, vec![axis]));
            break;
        }
        let a = format!("a{}", l + 1);
        let (op, attributes) = match model.activation {
            Activation::Relu => ("Relu", vec![]),
            Activation::Elu => ("Elu", vec![float_attribute("alpha", 1.0)]),
        };
        let name = format!("{}{}", model.activation.name(), l + 1);
        nodes.push(node(op, &name, &[&z], &a, attributes));
        between.push(value_info(&a, layer.outputs, ""));
        previous = a;
    }
    let input_doc = "28x28 images, one per row: raw grey levels 0-255, ink bright";
    let output_doc = "the probability of each digit 0-9";
    Message::default()
        .messages(field::graph::NODE, nodes)
        .string(field::graph::NAME, &format!("mnist_{}", shape_name(model)))
        .messages(field::graph::INITIALIZER, initializers)
        .message(field::graph::INPUT, value_info(INPUT, PIXELS, input_doc))
        .message(
            field::graph::OUTPUT,
            value_info(OUTPUT, CLASSES, output_doc),
        )
        .messages(field::graph::VALUE_INFO, between)
}

/// A NodeProto: operator `op` of the default domain, named `name`, from `inputs` to `output`.
fn node(op: &str, name: &str, inputs: &[&str], output: &str, attributes: Vec<Message>) -> Message {
    inputs
        .iter()
        .fold(Message::default(), |m, input| {
            m.string(field::node::INPUT, input)
        })
        .string(field::node::OUTPUT, output)
        .string(field::node::NAME, name)
        .string(field::node::OP_TYPE, op)
        .messages(field::node::ATTRIBUTE, attributes)
}

/// An AttributeProto holding one integer.
fn int_attribute(name: &str, value: i64) -> Message {
    Message::default()
        .string(field::attribute::NAME, name)
        .int(field::attribute::I, value)
        .int(field::attribute::TYPE, ATTRIBUTE_INT)
}

/// An AttributeProto holding one float.
fn float_attribute(name: &str, value: f32) -> Message {
    Message::default()
        .string(field::attribute::NAME, name)
        .float(field::attribute::F, value)
        .int(field::attribute::TYPE, ATTRIBUTE_FLOAT)
}

/// A TensorProto of float32 `values` with shape `dims` (row-major, as ONNX lays tensors out),
/// stored as little-endian bytes in `raw_data`.
fn initializer(name: &str, dims: &[usize], values: &[f32]) -> Message {
    debug_assert_eq!(dims.iter().product::<usize>(), values.len());
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    dims.iter()
        .fold(Message::default(), |m, &d| {
            m.int(field::tensor::DIMS, d as i64)
        })
        .int(field::tensor::DATA_TYPE, FLOAT)
        .string(field::tensor::NAME, name)
        .bytes(field::tensor::RAW_DATA, bytes)
}

/// A ValueInfoProto: tensor `name` of float32 [N, `width`], N being the batch.
fn value_info(name: &str, width: usize, doc: &str) -> Message {
    let dimension = |d: Message| Message::default().message(field::shape::DIM, d);
    let shape = dimension(Message::default().string(field::dimension::DIM_PARAM, BATCH)).message(
        field::shape::DIM,
        Message::default().int(field::dimension::DIM_VALUE, width as i64),
    );
    let tensor = Message::default()
        .int(field::tensor_type::ELEM_TYPE, FLOAT)
        .message(field::tensor_type::SHAPE, shape);
    let info = Message::default()
        .string(field::value_info::NAME, name)
        .message(
            field::value_info::TYPE,
            Message::default().message(field::type_proto::TENSOR_TYPE, tensor),
        );
    if doc.is_empty() {
        info
    } else {
        info.string(field::value_info::DOC_STRING, doc)
    }
}

/// The field numbers of the ONNX messages written here, as onnx.proto numbers them (one module
/// per message, named after it).
mod field {
    pub mod model {
        pub const IR_VERSION: u32 = 1;
        pub const PRODUCER_NAME: u32 = 2;
        pub const PRODUCER_VERSION: u32 = 3;
        pub const DOC_STRING: u32 = 6;
        pub const GRAPH: u32 = 7;
        pub const OPSET_IMPORT: u32 = 8;
        pub const METADATA_PROPS: u32 = 14;
    }
    /// OperatorSetIdProto.
    pub mod opset_id {
        pub const DOMAIN: u32 = 1;
        pub const VERSION: u32 = 2;
    }
    /// StringStringEntryProto.
    pub mod string_entry {
        pub const KEY: u32 = 1;
        pub const VALUE: u32 = 2;
    }
    pub mod graph {
        pub const NODE: u32 = 1;
        pub const NAME: u32 = 2;
        pub const INITIALIZER: u32 = 5;
        pub const INPUT: u32 = 11;
        pub const OUTPUT: u32 = 12;
        pub const VALUE_INFO: u32 = 13;
    }
    pub mod node {
        pub const INPUT: u32 = 1;
        pub const OUTPUT: u32 = 2;
        pub const NAME: u32 = 3;
        pub const OP_TYPE: u32 = 4;
        pub const ATTRIBUTE: u32 = 5;
    }
    pub mod attribute {
        pub const NAME: u32 = 1;
        pub const F: u32 = 2;
        pub const I: u32 = 3;
        pub const TYPE: u32 = 20;
    }
    /// TensorProto.
    pub mod tensor {
        pub const DIMS: u32 = 1;
        pub const DATA_TYPE: u32 = 2;
        pub const NAME: u32 = 8;
        pub const RAW_DATA: u32 = 9;
    }
    pub mod value_info {
        pub const NAME: u32 = 1;
        pub const TYPE: u32 = 2;
        pub const DOC_STRING: u32 = 3;
    }
    /// TypeProto.
    pub mod type_proto {
        pub const TENSOR_TYPE: u32 = 1;
    }
    /// TypeProto.Tensor.
    pub mod tensor_type {
        pub const ELEM_TYPE: u32 = 1;
        pub const SHAPE: u32 = 2;
    }
    /// TensorShapeProto.
    pub mod shape {
        pub const DIM: u32 = 1;
    }
    /// TensorShapeProto.Dimension.
    pub mod dimension {
        pub const DIM_VALUE: u32 = 1;
        pub const DIM_PARAM: u32 = 2;
    }
}

/// TensorProto.DataType FLOAT (float32).
const FLOAT: i64 = 1;
/// AttributeProto.AttributeType FLOAT and INT.
const ATTRIBUTE_FLOAT: i64 = 1;
const ATTRIBUTE_INT: i64 = 2;

// ---------------------------------------------------------------------------------------------
// The protobuf wire format, as much of it as the messages above need.
// ---------------------------------------------------------------------------------------------

/// A protobuf message: its fields in the order they are written. A field is a key (its number
/// and wire type, as a varint) then its value; a message or string inside another is written as
/// its length, then its bytes. Every length is known before anything is written, so the
/// bytes are laid down once, in place (a large model's weights are copied once, not once per
/// level of nesting).
#[derive(Default)]
struct Message {
    fields: Vec<(u32, Value)>,
}

/// A field's value; its kind fixes the wire type.
enum Value {
    /// int32, int64 and enums: wire type 0, a varint.
    Varint(u64),
    /// float: wire type 5, four little-endian bytes.
    Fixed32(u32),
    /// string and bytes: wire type 2, length-delimited.
    Bytes(Vec<u8>),
    /// A nested message: wire type 2, length-delimited.
    Message(Message),
}

const WIRE_VARINT: u32 = 0;
const WIRE_LENGTH_DELIMITED: u32 = 2;
const WIRE_FIXED32: u32 = 5;

impl Value {
    fn wire_type(&self) -> u32 {
        match self {
            Value::Varint(_) => WIRE_VARINT,
            Value::Fixed32(_) => WIRE_FIXED32,
            Value::Bytes(_) | Value::Message(_) => WIRE_LENGTH_DELIMITED,
        }
    }

    /// The bytes the value takes after its key, length prefix included.
    fn encoded_len(&self) -> usize {
        let delimited = |len: usize| varint_len(len as u64) + len;
        match self {
            Value::Varint(v) => varint_len(*v),
            Value::Fixed32(_) => 4,
            Value::Bytes(b) => delimited(b.len()),
            Value::Message(m) => delimited(m.encoded_len()),
        }
    }
}

impl Message {
    /// An int32, int64 or enum field; a negative value is written as its 64-bit two's
    /// complement, as protobuf's int64 is.
    fn int(mut self, number: u32, value: i64) -> Message {
        self.fields.push((number, Value::Varint(value as u64)));
        self
    }

    fn float(mut self, number: u32, value: f32) -> Message {
        self.fields.push((number, Value::Fixed32(value.to_bits())));
        self
    }

    fn string(self, number: u32, value: &str) -> Message {
        self.bytes(number, value.as_bytes().to_vec())
    }

    fn bytes(mut self, number: u32, value: Vec<u8>) -> Message {
        self.fields.push((number, Value::Bytes(value)));
        self
    }

    fn message(mut self, number: u32, value: Message) -> Message {
        self.fields.push((number, Value::Message(value)));
        self
    }

    /// A repeated message field: one entry per message, in order.
    fn messages(self, number: u32, values: impl IntoIterator<Item = Message>) -> Message {
        values
            .into_iter()
            .fold(self, |m, value| m.message(number, value))
    }

    /// The message's encoded size in bytes.
    fn encoded_len(&self) -> usize {
        self.fields
            .iter()
            .map(|(number, value)| varint_len(key(*number, value)) + value.encoded_len())
            .sum()
    }

    fn write(&self, out: &mut Vec<u8>) {
        for (number, value) in &self.fields {
            put_varint(out, key(*number, value));
            match value {
                Value::Varint(v) => put_varint(out, *v),
                Value::Fixed32(bits) => out.extend_from_slice(&bits.to_le_bytes()),
                Value::Bytes(b) => {
                    put_varint(out, b.len() as u64);
                    out.extend_from_slice(b);
                }
                Value::Message(m) => {
                    put_varint(out, m.encoded_len() as u64);
                    m.write(out);
                }
            }
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut out);
        out
    }
}

/// A field's key: its number, then three bits of wire type.
fn key(number: u32, value: &Value) -> u64 {
    (u64::from(number) << 3) | u64::from(value.wire_type())
}

/// The bytes `put_varint` writes for `v`: one per 7 bits, at least one.
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// `v` as a varint: 7 bits a byte, least significant first, the high bit set on every byte but
/// the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out.len(), varint_len(v), "varint_len({v})");
        out
    }

    /// The examples of protobuf's encoding guide, and the edges of the lengths.
    #[test]
    fn varints_are_protobufs() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(150), [0x96, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
        assert_eq!(varint(-1i64 as u64).len(), 10);
        for bits in 0..64 {
            varint(1 << bits);
            varint((1 << bits) - 1);
        }
    }

    /// Keys, lengths, nesting and floats as protobuf writes them, and the length known before
    /// writing matches what is written.
    #[test]
    fn messages_encode_as_protobuf_does() {
        // The encoding guide's `Test1 { a: 150 }` (field 1) and `Test2 { b: "testing" }` (2).
        let test1 = Message::default().int(1, 150);
        assert_eq!(test1.encoded_len(), 3);
        assert_eq!(test1.into_bytes(), [0x08, 0x96, 0x01]);
        let test2 = Message::default().string(2, "testing").into_bytes();
        assert_eq!(test2, b"\x12\x07testing");
        // `Test3 { c: Test1 { a: 150 } }` (field 3).
        let test3 = Message::default().message(3, Message::default().int(1, 150));
        assert_eq!(test3.into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        // A float (field 2, wire type 5): 1.0 is 0x3f800000, little-endian.
        let f = Message::default().float(2, 1.0).into_bytes();
        assert_eq!(f, [0x15, 0x00, 0x00, 0x80, 0x3f]);
        // Field 20 (AttributeProto.type) takes a two-byte key.
        assert_eq!(
            Message::default().int(20, 2).into_bytes(),
            [0xa0, 0x01, 0x02]
        );
        // A body of 200 bytes takes a two-byte length.
        let long = Message::default().bytes(9, vec![7; 200]);
        let bytes = Message::default().message(1, long).into_bytes();
        assert_eq!(&bytes[..6], [0x0a, 0xcb, 0x01, 0x4a, 0xc8, 0x01]);
        assert_eq!(bytes.len(), 206);
    }

    /// The scaling the graph starts with is the trainer's own constant.
    #[test]
    fn the_graph_scales_by_the_trainers_constant() {
        let model = Model::new(&[3], Activation::Relu, crate::model::Init::He, 1).unwrap();
        let bytes = encode(&model, &BTreeMap::new());
        let scale = PIXEL_SCALE.to_le_bytes();
        // `pixel_scale`'s raw_data: field 9, length 4, the f32.
        let raw = [&[0x4a, 0x04][..], &scale].concat();
        assert!(bytes.windows(raw.len()).any(|w| w == raw));
    }
}

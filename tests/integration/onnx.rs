//! ONNX out (issue 28): `export` writes a graph that another runtime (tract, which shares no code
//! with ours) reads and runs to `predict --probabilities`'s probabilities and to the library's
//! reference forward pass, within 1e-5 on test digits, for one to three hidden layers, ReLU and
//! ELU, `--save` files and checkpoints; the graph declares the documented input and output; and a
//! file that is not a model, or an output that cannot be written, is refused in one line with
//! nothing written.

use std::path::Path;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::common::output::{assert_one_line_error, assert_success, describe, run_in, stdout};
use mnist_gpu::cpu::reference::Reference;
use mnist_gpu::data::{self, Dataset, CLASSES, EMBEDDED_TEST, PIXELS};
use mnist_gpu::model_file;
use mnist_gpu::onnx;

/// How many of the embedded test digits each model classifies.
const DIGITS: usize = 300;
/// The most a probability may differ between the runtimes.
const TOLERANCE: f64 = 1e-5;

/// A temporary directory holding `d.csv`: the first `DIGITS` embedded test digits, labelled.
fn fixture() -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let test = EMBEDDED_TEST.load().unwrap();
    let digits = Dataset {
        images: test.images[..DIGITS * PIXELS].to_vec(),
        labels: test.labels.map(|l| l[..DIGITS].to_vec()),
        source: "d.csv".into(),
    };
    data::write_csv(&digits, &dir.path().join("d.csv"), true).unwrap();
    (dir, digits)
}

/// `mnist-gpu export --model <model> --onnx <onnx>` in `dir`, which must succeed.
fn export(dir: &Path, model: &str, onnx: &str) {
    let out = run_in(dir, &["export", "--model", model, "--onnx", onnx]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("wrote {onnx}")),
        "{}",
        describe(&out)
    );
}

/// The probabilities (n, 10) row by row that `predict --probabilities` writes for `d.csv`.
fn predicted(dir: &Path, model: &str) -> Vec<f64> {
    let args = [
        "predict", "--model", model, "--data", "d.csv", "--out", "p.csv",
    ];
    let out = run_in(
        dir,
        &[&args[..], &["--probabilities", "--backend", "cpu"]].concat(),
    );
    assert_success(&out);
    let text = std::fs::read_to_string(dir.join("p.csv")).unwrap();
    text.lines()
        .skip(1)
        .flat_map(|row| row.split(',').skip(2).map(|p| p.parse::<f64>().unwrap()))
        .collect::<Vec<_>>()
}

/// The library's reference forward pass: softmax (in f64) of its logits, (n, 10) row by row.
fn reference(model_path: &Path, images: &[u8]) -> Vec<f64> {
    let model = model_file::load(model_path).unwrap().model;
    let n = images.len() / PIXELS;
    let mut logits = vec![0.0; n * CLASSES];
    let indices: Vec<u32> = (0..n as u32).collect();
    Reference::new(&model, n).logits(&model, images, &indices, &mut logits);
    logits
        .chunks_exact(CLASSES)
        .flat_map(|z| {
            let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let exps: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

/// The ONNX file loaded and optimised by tract, for any batch size.
fn tract_plan(path: &Path) -> TypedRunnableModel<TypedModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|model| model.into_optimized())
        .and_then(|model| model.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load {}: {e:?}", path.display()))
}

/// tract's output for `images` (as raw 0–255 floats): (n, 10) row by row.
fn tract_run(plan: &TypedRunnableModel<TypedModel>, images: &[u8]) -> Vec<f32> {
    let n = images.len() / PIXELS;
    let pixels: Vec<f32> = images.iter().map(|&p| p as f32).collect();
    let input = Tensor::from_shape(&[n, PIXELS], &pixels).unwrap();
    let outputs = plan.run(tvec!(input.into())).unwrap();
    assert_eq!(outputs.len(), 1, "one output");
    assert_eq!(outputs[0].shape(), [n, CLASSES], "the output's shape");
    outputs[0].as_slice::<f32>().unwrap().to_vec()
}

/// Checks `|got − want| ≤ TOLERANCE` everywhere, naming the worst digit and class.
fn assert_within(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (worst, error) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .enumerate()
        .fold((0, 0.0), |best, (i, e)| {
            if e > best.1 || e.is_nan() {
                (i, e)
            } else {
                best
            }
        });
    assert!(
        error <= TOLERANCE,
        "{what}: digit {} class {}: {} against {} (|difference| {error:e} > {TOLERANCE:e})",
        worst / CLASSES,
        worst % CLASSES,
        got[worst],
        want[worst]
    );
}

/// The name, element type and shape ([N, width], N named) a ValueInfoProto declares.
fn declared(info: &pb::ValueInfoProto) -> (String, i32, Vec<String>) {
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{} is not declared a tensor", info.name);
    };
    let dims = tensor.shape.map_or(vec![], |s| s.dim);
    let dims = dims
        .into_iter()
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => v.to_string(),
            Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => p,
            None => "?".into(),
        })
        .collect();
    (info.name.clone(), tensor.elem_type, dims)
}

/// The file as protobuf, decoded by tract's own (prost) reader of onnx.proto: the versions, the
/// producer, the declared input and output, and the run's metadata in props and doc string.
fn check_declarations(path: &Path, hidden: &str, activation: &str) -> pb::ModelProto {
    let proto = tract_onnx::onnx().proto_model_for_path(path).unwrap();
    assert_eq!(proto.ir_version, onnx::IR_VERSION);
    let opsets: Vec<(&str, i64)> = proto
        .opset_import
        .iter()
        .map(|o| (o.domain.as_str(), o.version))
        .collect();
    assert_eq!(opsets, [("", onnx::OPSET)]);
    assert_eq!(proto.producer_name, "mnist-gpu");
    assert_eq!(proto.producer_version, env!("CARGO_PKG_VERSION"));
    let graph = proto.graph.as_ref().expect("a graph");
    let float = pb::tensor_proto::DataType::Float as i32;
    let batch = || "N".to_string();
    let inputs: Vec<_> = graph.input.iter().map(declared).collect();
    assert_eq!(
        inputs,
        [("pixels".into(), float, vec![batch(), "784".into()])]
    );
    let outputs: Vec<_> = graph.output.iter().map(declared).collect();
    assert_eq!(
        outputs,
        [("probabilities".into(), float, vec![batch(), "10".into()])]
    );
    let props: std::collections::BTreeMap<&str, &str> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(props.get("hidden"), Some(&hidden), "{props:?}");
    assert_eq!(props.get("activation"), Some(&activation), "{props:?}");
    let options = props.get("options").expect("the run's options");
    assert!(
        options.contains(&format!("\"activation\":\"{activation}\"")),
        "{options}"
    );
    assert!(
        proto.doc_string.contains(&format!("Options: {options}")),
        "{}",
        proto.doc_string
    );
    assert!(proto.doc_string.contains("0-255"), "{}", proto.doc_string);
    proto
}

/// Each kind of model the trainer saves, exported, gives the probabilities of `predict` and of
/// the library's reference in tract, for a batch of `DIGITS` and for a single digit (the batch
/// dimension is the runtime's to choose).
#[test]
fn exported_models_give_predicts_probabilities_in_tract() {
    let (dir, digits) = fixture();
    let d = dir.path();
    // (hidden, activation, what else the run does, the file to export)
    let cases: [(&str, &str, &[&str], &str); 5] = [
        ("16", "relu", &["--save", "m.safetensors"], "m.safetensors"),
        (
            "16",
            "elu",
            &["--init", "uniform", "--save", "m.safetensors"],
            "m.safetensors",
        ),
        (
            "24,12",
            "relu",
            &["--checkpoint", "c.safetensors"],
            "c.safetensors",
        ),
        (
            "24,12",
            "elu",
            &[
                "--optimizer",
                "adam",
                "--alpha",
                "0.01",
                "--save",
                "m.safetensors",
            ],
            "m.safetensors",
        ),
        (
            "20,16,12",
            "relu",
            &["--save", "m.safetensors"],
            "m.safetensors",
        ),
    ];
    for (hidden, activation, run, file) in cases {
        let what = format!("--hidden {hidden} --activation {activation} {run:?}");
        let train = ["--backend", "cpu", "--iterations", "30", "--hidden", hidden];
        let out = run_in(
            d,
            &[&train[..], &["--activation", activation], run].concat(),
        );
        assert_success(&out);
        export(d, file, "m.onnx");
        check_declarations(&d.join("m.onnx"), hidden, activation);

        let plan = tract_plan(&d.join("m.onnx"));
        let got = tract_run(&plan, &digits.images);
        assert_within(
            &format!("{what}: tract against predict"),
            &got,
            &predicted(d, file),
        );
        let want = reference(&d.join(file), &digits.images);
        assert_within(&format!("{what}: tract against the reference"), &got, &want);
        let one = tract_run(&plan, &digits.images[PIXELS..2 * PIXELS]);
        assert_within(
            &format!("{what}: one digit"),
            &one,
            &want[CLASSES..2 * CLASSES],
        );
    }
}

/// The graph is the documented one: the trainer's scaling, a Gemm per layer holding the model's
/// own W and b, the activation between, the softmax.
#[test]
fn the_graph_holds_the_models_weights_in_order() {
    let (dir, _) = fixture();
    let d = dir.path();
    let train = ["--backend", "cpu", "--iterations", "2", "--hidden", "8,6"];
    let out = run_in(
        d,
        &[
            &train[..],
            &["--activation", "elu", "--save", "m.safetensors"],
        ]
        .concat(),
    );
    assert_success(&out);
    export(d, "m.safetensors", "m.onnx");
    let proto = check_declarations(&d.join("m.onnx"), "8,6", "elu");
    let graph = proto.graph.expect("a graph");
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Mul", "Gemm", "Elu", "Gemm", "Elu", "Gemm", "Softmax"]
    );
    let model = model_file::load(&d.join("m.safetensors")).unwrap().model;
    let initializer = |name: &str| {
        let t = graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"));
        let values: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.dims.clone(), values)
    };
    assert_eq!(
        initializer("pixel_scale"),
        (vec![1], vec![mnist_gpu::model::PIXEL_SCALE])
    );
    for (l, layer) in model.layers.iter().enumerate() {
        let shape = vec![layer.outputs as i64, layer.inputs as i64];
        assert_eq!(
            initializer(&format!("W{}", l + 1)),
            (shape, layer.w.clone())
        );
        let b = (vec![layer.outputs as i64], layer.b.clone());
        assert_eq!(initializer(&format!("b{}", l + 1)), b);
    }
}

/// A file that is not a model, or an output that cannot be written, is refused in one line
/// (status 1 for the model, 2 for the command line), and nothing is written.
#[test]
fn bad_exports_are_refused_in_one_line() {
    let (dir, _) = fixture();
    let d = dir.path();
    let out = run_in(
        d,
        &[
            "--backend",
            "cpu",
            "--iterations",
            "1",
            "--save",
            "m.safetensors",
        ],
    );
    assert_success(&out);
    std::fs::write(d.join("text.safetensors"), "not a model").unwrap();
    std::fs::create_dir(d.join("dir.onnx")).unwrap();
    let cases: [(&str, &str, &str, i32); 6] = [
        (
            "text.safetensors",
            "x.onnx",
            "not a safetensors model file",
            1,
        ),
        ("missing.safetensors", "x.onnx", "missing.safetensors", 1),
        ("d.csv", "x.onnx", "d.csv", 1),
        ("m.safetensors", "x.txt", "must end in .onnx", 2),
        ("m.safetensors", "nowhere/x.onnx", "does not exist", 2),
        ("m.safetensors", "dir.onnx", "is a directory", 2),
    ];
    for (model, onnx, says, status) in cases {
        let out = run_in(d, &["export", "--model", model, "--onnx", onnx]);
        let line = assert_one_line_error(&out);
        assert!(line.contains(says), "export {model} {onnx}: {line}");
        assert_eq!(out.status.code(), Some(status), "{}", describe(&out));
        assert!(!d.join("x.onnx").exists() && !d.join("x.txt").exists());
    }
    // Nothing but the files made above, and no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["d.csv", "dir.onnx", "m.safetensors", "text.safetensors"]
    );
}

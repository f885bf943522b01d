//! Training in the page (`serve`'s Train panel): the shaders it is served are the bytes of
//! shaders/, every one compiles in the browser and the fused step's pipelines build, and runs
//! in headless Chromium's WebGPU (SwiftShader, a software adapter, on this machine) end where
//! the native trainer's do, within parity.rs's float32 tolerances. Without Chromium and its
//! WebDriver, or without WebGPU in it, the tests fail and say what to install.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mnist_gpu::augment::{RECORD_HEADER, RECORD_WORDS};
use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::pool::{ImagePool, ListSizes};
use mnist_gpu::data::{write_csv, EMBEDDED_TEST};
use mnist_gpu::model::{argmax_columns, Activation, Init, Model};
use mnist_gpu::params::ParamLayout;
use serde_json::{json, Value};

use crate::common::browser::{base64_decode, http, http_bytes, json_of, serve_with_env};
use crate::common::browser::{Browser, Process};
use crate::common::output::{describe, run_in};
use crate::common::{assert_models_close, random_dataset};

/// parity.rs's float32 tolerances: each progress point's batch loss within `1e-4 + 1e-3·|cpu|`,
/// the parameters within `1e-4 + 1e-3·|cpu|`.
const LOSS_RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

/// A directory for the run: 300 labelled random images as CSV (250 train and 50 dev), and a
/// small model for the page's other panels.
fn workspace() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_csv(
            &random_dataset(300, 23),
            &dir.path().join("train.csv"),
            false,
        )
        .unwrap();
        let out = run_in(
            dir.path(),
            &[
                "--train",
                "train.csv",
                "--dev-size",
                "50",
                "--hidden",
                "8",
                "--iterations",
                "2",
                "--backend",
                "cpu",
                "--save",
                "page.safetensors",
            ],
        );
        assert!(
            out.status.success(),
            "training the page's model: {}",
            describe(&out)
        );
        dir
    })
    .path()
}

fn start_server() -> (Process, std::net::SocketAddr) {
    start_server_with(&[])
}

fn start_server_with(env: &[(&str, &str)]) -> (Process, std::net::SocketAddr) {
    let dir = workspace();
    let train = dir.join("train.csv");
    serve_with_env(
        Some(&dir.join("page.safetensors")),
        &["--backend", "cpu", "--train", train.to_str().unwrap()],
        env,
    )
}

#[test]
fn served_shaders_are_the_bytes_of_shaders_dir() {
    let (_server, address) = start_server();
    let (status, body) = http(address, "GET", "/api/shaders", b"");
    assert_eq!(status, 200, "{body}");
    let listed: Vec<String> = serde_json::from_value(json_of(&body)).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    for name in &on_disk {
        let (status, served) = http(address, "GET", &format!("/api/shaders/{name}"), b"");
        assert_eq!(status, 200, "{name}: {served}");
        let file = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(
            served == file,
            "/api/shaders/{name} is not the bytes of shaders/{name}"
        );
    }
    // Every file but matmul_coop (compiled after matmul.wgsl, with an extension) is listed.
    let mut expected: Vec<String> = on_disk
        .into_iter()
        .filter(|n| n != "matmul_coop.wgsl")
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    expected.sort();
    assert_eq!(listed_sorted, expected);
    let (status, body) = http(address, "GET", "/api/shaders/nothing.wgsl", b"");
    assert_eq!(status, 404);
    assert!(json_of(&body)["error"]
        .as_str()
        .unwrap()
        .contains("no shader nothing.wgsl"));
}

/// A plan's body: its JSON header and the blob after it (`cli/serve/plan.rs`'s form).
fn plan_parts(body: &[u8]) -> (Value, Vec<u8>) {
    let length = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&body[4..4 + length]).expect("a JSON header");
    let blob = body[(4 + length).next_multiple_of(4)..].to_vec();
    (header, blob)
}

/// The labels a plan gives its resources of `kind` ("buffer", "pipeline", "group"), by id.
fn labels(commands: &[Value], kind: &str) -> std::collections::HashMap<u64, Value> {
    commands
        .iter()
        .filter(|c| c[0] == kind)
        .map(|c| (c[1].as_u64().unwrap(), c.clone()))
        .collect()
}

/// An elastic run's plan: each step's warps (its key, strengths and taps: the same few words
/// whatever the batch) in a region of its own, written where the step's slot says it starts,
/// warp dispatched before gradients, which reads the warped copies; nothing per image, so a
/// plan is not cut short for elastic runs.
#[test]
fn an_elastic_plan_carries_each_steps_key_not_its_fields() {
    let (_server, address) = start_server();
    // 250 samples in batches of 10: 25 steps an epoch, 500 in all.
    let request = json!({"options": {"hidden": [8], "batch_size": 10, "epochs": 20,
                         "augment": {"kind": "elastic", "rotation": 0.2, "scale": 0.12,
                         "shear": 0.15, "translation": 1.7, "elastic_alpha": 1.0,
                         "elastic_sigma": 4.0}, "dev_size": 50},
                         "from": 0, "steps": 512, "workgroup_storage": 16384});
    let body = request.to_string();
    let (status, answer) = http_bytes(address, "POST", "/api/train/plan", body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let (plan, blob) = plan_parts(&answer);
    assert_eq!(
        (plan["next"].clone(), plan["total"].clone()),
        (json!(500), json!(500))
    );
    let commands = plan["commands"].as_array().unwrap();
    let (buffers, pipelines) = (labels(commands, "buffer"), labels(commands, "pipeline"));
    let groups = labels(commands, "group");
    let named = |id: &Value, table: &std::collections::HashMap<u64, Value>| {
        table[&id.as_u64().unwrap()][2]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A step's record: a header of 16 words and σ = 4's 25 taps; regions RECORD_WORDS apart.
    let record_bytes = 4 * (RECORD_HEADER + 25);
    let (mut steps, mut warps, mut slots) = (0, Vec::new(), None);
    let mut keys = std::collections::HashSet::new();
    for (i, c) in commands.iter().enumerate() {
        match c[0].as_str().unwrap() {
            "write" if named(&c[1], &buffers) == "warps" => {
                let (at, len) = (
                    c[3][1].as_u64().unwrap() as usize,
                    c[3][2].as_u64().unwrap(),
                );
                assert_eq!(len, record_bytes as u64, "{c}");
                keys.insert(blob[at..at + 8].to_vec());
                warps.push(c[2].as_u64().unwrap());
                steps += 1;
            }
            "write" if named(&c[1], &buffers) == "step slots" => {
                slots = Some(c[3][1].as_u64().unwrap() as usize);
            }
            "dispatch" if named(&c[1], &pipelines) == "gradients" => {
                let before = &commands[i - 1];
                assert_eq!(named(&before[1], &pipelines), "warp", "{before}");
                // Binding 1 of its group: the warped copies.
                let entries = &groups[&c[2].as_u64().unwrap()][4];
                let images = entries
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e[0] == 1)
                    .unwrap();
                assert_eq!(named(&images[1], &buffers), "copied images");
            }
            "submit" if !warps.is_empty() => {
                // Each step's region is its own, and starts where its slot says (copies_at,
                // the slot's third word, in words).
                let at = slots.take().expect("the slots written before the submit");
                for (k, &offset) in warps.iter().enumerate() {
                    let word = at + 256 * k + 8;
                    let copies_at = u32::from_le_bytes(blob[word..word + 4].try_into().unwrap());
                    assert_eq!(4 * copies_at as u64, offset, "region {k}'s start");
                    assert!(k == 0 || offset >= warps[k - 1] + 4 * RECORD_WORDS as u64);
                }
                warps.clear();
            }
            _ => {}
        }
    }
    // Every step's warps are in the plan, each with a key of its own; the last steps' submit
    // (their slots) comes with the next plan's first step, as natively with the next step.
    assert_eq!(steps, 500);
    assert_eq!(keys.len(), 500, "the steps' keys repeat");
}

/// The measure: what the warps add to the plan of an elastic epoch of 9,000 images
/// (the embedded digits less a dev set of 1,000, batches of 64: 141 steps), at most 100 KB
/// where the fields took 140 MB. (The rest of a plan, the same without warps, is the starting
/// weights and the epoch's lists.)
#[test]
fn warps_add_at_most_100_kb_to_an_elastic_epoch_of_9000_images() {
    let (_server, address) = serve_with_env(None, &["--backend", "cpu"], &[]);
    let plan = |augment: Value| {
        let request = json!({"options": {"hidden": [32], "batch_size": 64, "epochs": 1,
                             "augment": augment, "dev_size": 1000},
                             "from": 0, "steps": 2048, "workgroup_storage": 16384});
        let body = request.to_string();
        let (status, answer) = http_bytes(address, "POST", "/api/train/plan", body.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let (header, _) = plan_parts(&answer);
        assert_eq!(
            (header["next"].clone(), header["total"].clone()),
            (json!(141), json!(141))
        );
        answer.len()
    };
    let elastic = plan(
        json!({"kind": "elastic", "rotation": 0.2, "scale": 0.12, "shear": 0.15,
                              "translation": 1.7, "elastic_alpha": 1.0, "elastic_sigma": 4.0}),
    );
    let plain = plan(json!(false));
    assert!(
        elastic <= plain + 100_000,
        "the elastic epoch's plan takes {elastic} bytes, {plain} without warps"
    );
}

/// A page with WebGPU; fails naming what is missing.
fn open_page(address: std::net::SocketAddr) -> Browser {
    let browser = Browser::with_webgpu();
    browser.call("POST", "/url", json!({"url": format!("http://{address}/")}));
    let has_gpu = browser.script("return 'gpu' in navigator");
    assert_eq!(
        has_gpu,
        json!(true),
        "Chromium offers no WebGPU here (it needs --enable-unsafe-webgpu, and Chromium 113 or \
         later)"
    );
    browser
}

/// The trainer's state on the page, as JSON.
fn trainer(browser: &Browser) -> Value {
    let text = browser.script(
        "const t = window.trainer; return JSON.stringify({error: t.error || null, \
         compiled: t.compiled || null, adapter: t.adapter, running: t.running, \
         done: t.done ? {step: t.done.step, steps: t.done.steps, stopped: t.done.stopped, \
         params: Array.from(t.done.params || [])} : null, \
         history: t.history.map(h => [h.step, h.loss, h.dev_loss])})",
    );
    json_of(text.as_str().unwrap())
}

/// Waits for the page's run to end; panics with the page's error if it failed.
fn finished(browser: &Browser, seconds: u64) -> Value {
    browser.wait_for("the run's end", seconds, |b| {
        let t = trainer(b);
        assert!(
            t["error"].is_null(),
            "the page's run failed: {}",
            t["error"]
        );
        !t["done"].is_null()
    });
    trainer(browser)
}

/// One case: `options` as the page takes them, and the same run's command line.
struct Case {
    what: &'static str,
    page: Value,
    cli: &'static [&'static str],
}

/// Trains natively on the CPU (`--backend cpu`, the reference) with `cli`, and returns the
/// model and the batch loss of every progress line.
fn native(case: &Case) -> (Model, Vec<f64>) {
    let dir = workspace();
    let name = format!("{}.safetensors", case.what.replace(' ', "_"));
    let metrics = format!("{}.csv", case.what.replace(' ', "_"));
    let mut args = vec![
        "--train",
        "train.csv",
        "--dev-size",
        "50",
        "--backend",
        "cpu",
        "--save",
        &name,
        "--metrics",
        &metrics,
    ];
    args.extend(case.cli);
    let out = run_in(dir, &args);
    assert!(out.status.success(), "{}: {}", case.what, describe(&out));
    let model = mnist_gpu::model_file::load(&dir.join(&name)).unwrap().model;
    let csv = std::fs::read_to_string(dir.join(&metrics)).unwrap();
    let losses = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    (model, losses)
}

/// Runs `case` in the page and checks it against the native run.
fn check_case(browser: &Browser, case: &Case) {
    let (want, losses) = native(case);
    browser.script(&format!("startTraining({}); return 1", case.page));
    let t = finished(browser, 240);
    assert_eq!(t["done"]["stopped"], json!(false), "{}", case.what);
    let history = t["history"].as_array().unwrap();
    assert_eq!(
        history.len(),
        losses.len(),
        "{}: progress points",
        case.what
    );
    for (point, want) in history.iter().zip(&losses) {
        let got = point[1].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-4 + LOSS_RTOL * want.abs(),
            "{}: the batch loss at step {} is {got} in the browser, {want} natively",
            case.what,
            point[0]
        );
    }
    let flat: Vec<f32> = t["done"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let layout = ParamLayout::dense(&want);
    assert_eq!(flat.len(), layout.floats, "{}: parameters", case.what);
    let got = layout.unpack(&flat, want.activation);
    assert_models_close(case.what, &got, &want, ATOL, RTOL);
}

/// The runs the page must follow: full batch and mini-batch (with a short last batch), one and
/// two hidden layers, ReLU and ELU, SGD, momentum and Adam, lr decay, and each augmentation
/// (shift; affine at the default strengths; elastic at others, so the form's strengths reach
/// the warps).
fn parity_cases() -> [Case; 5] {
    [
        Case {
            what: "full batch relu sgd",
            page: json!({"hidden": [8], "activation": "relu", "optimizer": "sgd", "alpha": 0.5,
                         "iterations": 6, "dev_size": 50, "log_every": 1, "seed": 1}),
            cli: &[
                "--hidden",
                "8",
                "--alpha",
                "0.5",
                "--iterations",
                "6",
                "--log-every",
                "1",
            ],
        },
        Case {
            // 250 samples in batches of 64: the last of each epoch holds 58.
            what: "mini-batch two layers elu momentum decay",
            page: json!({"hidden": [8, 6], "activation": "elu", "optimizer": "momentum",
                         "alpha": 0.1, "batch_size": 64, "epochs": 2, "lr_decay": 0.9,
                         "dev_size": 50, "log_every": 1, "seed": 4}),
            cli: &[
                "--hidden",
                "8,6",
                "--activation",
                "elu",
                "--optimizer",
                "momentum",
                "--alpha",
                "0.1",
                "--batch-size",
                "64",
                "--epochs",
                "2",
                "--lr-decay",
                "0.9",
                "--log-every",
                "1",
                "--seed",
                "4",
            ],
        },
        Case {
            what: "mini-batch adam augment",
            page: json!({"hidden": [12], "activation": "relu", "optimizer": "adam",
                         "alpha": 0.002, "batch_size": 100, "epochs": 2, "lr_decay": 0.8,
                         "augment": true, "dev_size": 50, "log_every": 2, "seed": 7}),
            cli: &[
                "--hidden",
                "12",
                "--optimizer",
                "adam",
                "--alpha",
                "0.002",
                "--batch-size",
                "100",
                "--epochs",
                "2",
                "--lr-decay",
                "0.8",
                "--augment",
                "--log-every",
                "2",
                "--seed",
                "7",
            ],
        },
        Case {
            // 250 samples in batches of 64: 4 steps, the last of 58.
            what: "mini-batch adam affine",
            page: json!({"hidden": [8], "optimizer": "adam", "alpha": 0.003, "batch_size": 64,
                         "epochs": 1, "augment": {"kind": "affine", "rotation": 0.2,
                         "scale": 0.12, "shear": 0.15, "translation": 1.7,
                         "elastic_alpha": 1.0, "elastic_sigma": 4.0},
                         "dev_size": 50, "log_every": 2, "seed": 9}),
            cli: &[
                "--hidden",
                "8",
                "--optimizer",
                "adam",
                "--alpha",
                "0.003",
                "--batch-size",
                "64",
                "--epochs",
                "1",
                "--augment",
                "affine",
                "--log-every",
                "2",
                "--seed",
                "9",
            ],
        },
        Case {
            what: "mini-batch sgd elastic",
            page: json!({"hidden": [8], "optimizer": "sgd", "alpha": 0.1, "batch_size": 64,
                         "epochs": 1, "augment": {"kind": "elastic", "rotation": 0.3,
                         "scale": 0.1, "shear": 0.2, "translation": 1.5,
                         "elastic_alpha": 2.0, "elastic_sigma": 3.0},
                         "dev_size": 50, "log_every": 2, "seed": 11}),
            cli: &[
                "--hidden",
                "8",
                "--alpha",
                "0.1",
                "--batch-size",
                "64",
                "--epochs",
                "1",
                "--augment",
                "elastic",
                "--rotation",
                "0.3",
                "--scale",
                "0.1",
                "--shear",
                "0.2",
                "--translation",
                "1.5",
                "--elastic-alpha",
                "2",
                "--elastic-sigma",
                "3",
                "--log-every",
                "2",
                "--seed",
                "11",
            ],
        },
    ]
}

#[test]
fn the_page_compiles_every_shader_and_trains_as_the_native_trainer_does() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    browser.script("worker().postMessage({type: 'compile'}); return 1");
    browser.wait_for("the shaders compiled", 120, |b| {
        let t = trainer(b);
        assert!(t["error"].is_null(), "in the browser: {}", t["error"]);
        !t["compiled"].is_null()
    });
    let t = trainer(&browser);
    // Every shader served (warp.wgsl among them) compiled: the list, not a count that a new
    // shader would leave behind.
    let (status, body) = http(address, "GET", "/api/shaders", b"");
    assert_eq!(status, 200, "{body}");
    let served = json_of(&body);
    let compiled: Vec<Value> = t["compiled"]["shaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        json!(compiled),
        served,
        "shaders compiled: {}",
        t["compiled"]
    );
    assert!(served.as_array().unwrap().contains(&json!("warp.wgsl")));
    // Every shader but matmul_coop.wgsl, which needs an extension browsers lack.
    let standalone = mnist_gpu::gpu::shaders::SHADERS.len() - 1;
    assert_eq!(compiled.len(), standalone, "served: {served}");
    // Both engines' pipelines build: the fused step's, and every per-operation kernel's
    // (matmul's two among them).
    let mut pipelines: Vec<&str> = ["gradients", "logits", "update", "matmul tiled"].to_vec();
    pipelines.extend(mnist_gpu::gpu::kernels::KERNELS.iter().map(|k| k.0));
    pipelines.sort();
    pipelines.dedup();
    assert_eq!(t["compiled"]["pipelines"], json!(pipelines));
    crate::common::tell(&format!(
        "browser_train: the page's adapter: {}",
        t["adapter"]
    ));
    for case in &parity_cases() {
        check_case(&browser, case);
    }
}

/// The networks only the per-operation kernels cover, which the page runs as the native GPU
/// backend does: wide layers in mini-batches with a short last batch (784-256-10: the last of
/// each epoch's four batches holds 58), two hidden layers wider than the fused step's 64 with
/// Adam and affine warps, and three hidden layers with momentum, ELU and elastic warps.
fn wide_and_deep_cases() -> [Case; 3] {
    [
        Case {
            what: "wide mini-batch sgd",
            page: json!({"hidden": [256], "optimizer": "sgd", "alpha": 0.1, "batch_size": 64,
                         "epochs": 2, "dev_size": 50, "log_every": 1, "seed": 3}),
            cli: &[
                "--hidden",
                "256",
                "--alpha",
                "0.1",
                "--batch-size",
                "64",
                "--epochs",
                "2",
                "--log-every",
                "1",
                "--seed",
                "3",
            ],
        },
        Case {
            what: "two wide layers adam affine",
            page: json!({"hidden": [128, 64], "optimizer": "adam", "alpha": 0.002,
                         "batch_size": 64, "epochs": 2, "augment": {"kind": "affine",
                         "rotation": 0.2, "scale": 0.12, "shear": 0.15, "translation": 1.7,
                         "elastic_alpha": 1.0, "elastic_sigma": 4.0},
                         "dev_size": 50, "log_every": 2, "seed": 5}),
            cli: &[
                "--hidden",
                "128,64",
                "--optimizer",
                "adam",
                "--alpha",
                "0.002",
                "--batch-size",
                "64",
                "--epochs",
                "2",
                "--augment",
                "affine",
                "--log-every",
                "2",
                "--seed",
                "5",
            ],
        },
        Case {
            what: "three layers elu momentum elastic",
            page: json!({"hidden": [40, 30, 20], "activation": "elu", "optimizer": "momentum",
                         "alpha": 0.05, "batch_size": 100, "epochs": 1, "lr_decay": 0.9,
                         "augment": {"kind": "elastic", "rotation": 0.3, "scale": 0.1,
                         "shear": 0.2, "translation": 1.5, "elastic_alpha": 2.0,
                         "elastic_sigma": 3.0}, "dev_size": 50, "log_every": 1, "seed": 6}),
            cli: &[
                "--hidden",
                "40,30,20",
                "--activation",
                "elu",
                "--optimizer",
                "momentum",
                "--alpha",
                "0.05",
                "--batch-size",
                "100",
                "--epochs",
                "1",
                "--lr-decay",
                "0.9",
                "--augment",
                "elastic",
                "--rotation",
                "0.3",
                "--scale",
                "0.1",
                "--shear",
                "0.2",
                "--translation",
                "1.5",
                "--elastic-alpha",
                "2",
                "--elastic-sigma",
                "3",
                "--log-every",
                "1",
                "--seed",
                "6",
            ],
        },
    ]
}

#[test]
fn the_page_trains_wide_and_deep_networks_as_the_native_trainer_does() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    for case in &wide_and_deep_cases() {
        check_case(&browser, case);
    }
    page_speed();
}

/// The page's samples per second for 784-32-10 and 784-256-10, batches of 64, one epoch of
/// the embedded digits (set MNIST_GPU_PAGE_SPEED=1; a measurement, printed, not asserted).
fn page_speed() {
    if std::env::var_os("MNIST_GPU_PAGE_SPEED").is_none() {
        return;
    }
    let (_server, address) = serve_with_env(None, &["--backend", "cpu"], &[]);
    let browser = open_page(address);
    for hidden in [32, 256] {
        browser.script(&format!(
            "startTraining({{hidden: [{hidden}], alpha: 0.1, batch_size: 64, epochs: 1}}); \
             return 1"
        ));
        finished(&browser, 1200);
        let speed = browser.script("return window.trainer.last.samples_per_second");
        let adapter = browser.script("return window.trainer.adapter");
        crate::common::tell(&format!(
            "page speed: 784-{hidden}-10, batches of 64, one epoch: {speed} samples/s on {adapter}"
        ));
    }
}

/// Native training with `args` in the workspace (`--backend cpu`, the reference).
fn native_run(args: &[&str]) {
    let mut all = vec![
        "--train",
        "train.csv",
        "--dev-size",
        "50",
        "--backend",
        "cpu",
    ];
    all.extend(args);
    let out = run_in(workspace(), &all);
    assert!(out.status.success(), "{all:?}: {}", describe(&out));
}

/// A damaged file and a model that is no checkpoint are refused with one line.
fn refuses_bad_checkpoints(address: std::net::SocketAddr, native: &[u8]) {
    let dir = workspace();
    for (bytes, says) in [
        (&native[..native.len() / 2], "the dropped file"),
        (
            &std::fs::read(dir.join("page.safetensors")).unwrap()[..],
            "not a checkpoint",
        ),
    ] {
        let (status, body) = http(address, "POST", "/api/checkpoint/open", bytes);
        assert_eq!(status, 400, "{body}");
        let error = json_of(&body)["error"].as_str().unwrap().to_string();
        assert!(error.contains(says) && !error.contains('\n'), "{error}");
    }
}

#[test]
fn a_native_checkpoint_continues_in_the_page_and_resumes_natively() {
    let dir = workspace();
    // 250 samples in batches of 64: 4 steps an epoch, progress every 2.
    let run = [
        "--hidden",
        "8",
        "--optimizer",
        "adam",
        "--alpha",
        "0.003",
        "--batch-size",
        "64",
        "--lr-decay",
        "0.9",
        "--seed",
        "5",
        "--log-every",
        "2",
    ];
    native_run(&[&run[..], &["--epochs", "4", "--save", "whole.safetensors"]].concat());
    native_run(
        &[
            &run[..],
            &["--epochs", "1", "--checkpoint", "first.ckpt.safetensors"],
        ]
        .concat(),
    );

    let (_server, address) = start_server();
    let native = std::fs::read(dir.join("first.ckpt.safetensors")).unwrap();
    refuses_bad_checkpoints(address, &native);

    let browser = open_page(address);
    let opened = open_checkpoint(&browser, &native);
    assert_eq!(opened["step"], json!(4), "{opened}");
    browser.script("startTraining({epochs: 3}, window.opened.id); return 1");
    let t = finished(&browser, 240);
    assert_eq!(t["done"]["step"], json!(12), "{}", t["done"]);
    browser.script(
        "downloadCheckpoint(false).then(() => 0, e => window.trainer.error = e.message); return 1",
    );
    browser.wait("the checkpoint downloaded", |b| {
        let t = trainer(b);
        assert!(t["error"].is_null(), "downloading: {}", t["error"]);
        b.script("return window.trainer.checkpoint || null")
            .is_string()
    });
    let text = browser.script("return window.trainer.checkpoint");
    let page_ckpt = base64_decode(text.as_str().unwrap());
    std::fs::write(dir.join("page.ckpt.safetensors"), page_ckpt).unwrap();
    native_run(&[
        "--resume",
        "page.ckpt.safetensors",
        "--epochs",
        "4",
        "--save",
        "resumed.safetensors",
    ]);
    let load = |name: &str| mnist_gpu::model_file::load(&dir.join(name)).unwrap().model;
    assert_models_close(
        "native 1 epoch, the page 2, native 1 against native 4",
        &load("resumed.safetensors"),
        &load("whole.safetensors"),
        ATOL,
        RTOL,
    );

    // A warped run's checkpoint fills the form with its augmentation and strengths, which a
    // run continued from it keeps (the server takes them from the checkpoint).
    native_run(&[
        "--hidden",
        "8",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--augment",
        "elastic",
        "--rotation",
        "0.3",
        "--elastic-sigma",
        "3",
        "--checkpoint",
        "elastic.ckpt.safetensors",
    ]);
    let elastic = std::fs::read(dir.join("elastic.ckpt.safetensors")).unwrap();
    let opened = open_checkpoint(&browser, &elastic);
    assert_eq!(
        opened["options"]["augment"]["kind"],
        json!("elastic"),
        "{opened}"
    );
    assert_eq!(form_field(&browser, "augment"), json!("elastic"));
    assert_eq!(form_field(&browser, "rotation"), json!("0.3"));
    assert_eq!(form_field(&browser, "elastic_sigma"), json!("3"));
}

/// Opens checkpoint `bytes` in the page (as dropping the file does); returns the server's answer.
fn open_checkpoint(browser: &Browser, bytes: &[u8]) -> Value {
    let bytes: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    browser.script(&format!(
        "window.opened = null; openCheckpoint(new Uint8Array([{}])).then(a => window.opened = a, \
         e => window.opened = {{error: e.message}}); return 1",
        bytes.join(",")
    ));
    browser.wait("the checkpoint opened", |b| {
        !b.script("return window.opened || null").is_null()
    });
    browser.script("return window.opened")
}

/// The value of the Train form's field `name`.
fn form_field(browser: &Browser, name: &str) -> Value {
    browser.script(&format!(
        "return document.getElementById('train-form').elements['{name}'].value"
    ))
}

/// Clicks "Check this GPU" and returns what the page concluded.
fn check_this_gpu(browser: &Browser) -> Value {
    browser.click("#train-check");
    browser.wait_for("the check's result", 240, |b| {
        let t = trainer(b);
        assert!(
            t["error"].is_null(),
            "the check failed to run: {}",
            t["error"]
        );
        !b.script("return window.trainer.checked || null").is_null()
    });
    let checked = browser.script("return window.trainer.checked");
    let line = browser.text("train-check-result");
    crate::common::tell(&format!("browser_train: {line}"));
    assert!(
        line.contains(checked["worst"]["what"].as_str().unwrap()),
        "{line}"
    );
    assert!(line.contains("swiftshader"), "the adapter is named: {line}");
    checked
}

#[test]
fn check_this_gpu_passes_on_the_software_adapter_and_fails_against_a_perturbed_trace() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    let checked = check_this_gpu(&browser);
    assert_eq!(checked["pass"], json!(true), "{checked}");
    assert!(browser.text("train-check-result").starts_with("PASS"));
    drop(browser);

    let (_server, address) = start_server_with(&[("MNIST_GPU_PERTURB_CHECK", "1")]);
    let browser = open_page(address);
    let checked = check_this_gpu(&browser);
    assert_eq!(checked["pass"], json!(false), "{checked}");
    assert!(browser.text("train-check-result").starts_with("FAIL"));
    // The perturbed parameter is the one named.
    assert!(
        checked["worst"]["what"]
            .as_str()
            .unwrap()
            .ends_with("W1[0, 0] at the end"),
        "{checked}"
    );
}

#[test]
fn the_page_answers_a_drawing_while_it_trains_and_stops_when_asked() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    // Long enough to be training throughout: 25 steps an epoch, 400 epochs.
    browser.script(
        "startTraining({hidden: [8], optimizer: 'momentum', alpha: 0.05, batch_size: 10, \
         epochs: 400, dev_size: 50, log_every: 25}); return 1",
    );
    browser.wait_for("the first progress point", 120, |b| {
        let t = trainer(b);
        assert!(
            t["error"].is_null(),
            "the page's run failed: {}",
            t["error"]
        );
        !t["history"].as_array().unwrap().is_empty()
    });
    browser.draw(&[vec![(0.5, 0.1), (0.5, 0.5), (0.5, 0.9)]]);
    browser.wait("an answer to the drawing", |b| !b.text("digit").is_empty());
    let t = trainer(&browser);
    assert_eq!(
        t["running"],
        json!(true),
        "the run ended before the drawing was answered"
    );
    assert!(t["done"].is_null());
    browser.click("#train-stop");
    let t = finished(&browser, 60);
    assert_eq!(t["done"]["stopped"], json!(true), "{}", t["done"]);
    let step = t["done"]["step"].as_u64().unwrap();
    assert!(step > 0 && step < 10_000, "stopped after step {step}");
    // The figures stay, saying where it stopped.
    let title = browser.text("train-result-title");
    assert_eq!(title, format!("Stopped after step {step} of 10000"));
}

#[test]
fn without_a_model_the_page_trains_one_and_answers_drawings_with_it() {
    let train = workspace().join("train.csv");
    let (_server, address) = serve_with_env(
        None,
        &["--backend", "cpu", "--train", train.to_str().unwrap()],
        &[],
    );
    for path in [
        "/api/model",
        "/api/weights",
        "/api/confusion",
        "/api/test?misclassified=true",
    ] {
        let (status, body) = http(address, "GET", path, b"");
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            json_of(&body)["error"]
                .as_str()
                .unwrap()
                .starts_with("no model"),
            "{body}"
        );
    }
    let (status, body) = http(address, "POST", "/api/predict", b"{}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(address, "GET", "/api/test", b"");
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["digit"].is_null(), "{body}");

    let browser = open_page(address);
    browser.wait("the page saying there is no model", |b| {
        b.text("summary").starts_with("no model")
    });
    // The model panel says so too, rather than standing empty.
    browser.wait("the model panel saying there is no model", |b| {
        b.text("metadata").starts_with("no model")
    });
    browser.script(
        "startTraining({hidden: [8], alpha: 0.5, iterations: 5, dev_size: 50, log_every: 5}); \
         return 1",
    );
    finished(&browser, 120);
    // The drawing is answered by the network just trained, in the browser.
    browser.draw(&[vec![(0.5, 0.1), (0.5, 0.5), (0.5, 0.9)]]);
    browser.wait("an answer to the drawing", |b| !b.text("digit").is_empty());
    assert_eq!(browser.text("draw-error"), "");
    let digit: u8 = browser.text("digit").parse().expect("a digit");
    assert!(digit < 10);
    browser.click("#random");
    browser.wait("a test digit classified", |b| {
        !b.text("test-digit").is_empty()
    });
    assert!(
        browser.text("test-about").starts_with("test image"),
        "{}",
        browser.text("test-about")
    );
}

#[test]
fn a_link_fills_the_form_and_starts_the_run() {
    let (_server, address) = start_server();
    let browser = Browser::with_webgpu();
    // augment=on: as links made when augment was a checkbox say it, shift.
    let hash = "hidden=8,6&activation=elu&optimizer=momentum&alpha=0.1&batch_size=64&epochs=1\
                &augment=on&dev_size=50&log_every=2&start=1";
    browser.call(
        "POST",
        "/url",
        json!({"url": format!("http://{address}/#{hash}")}),
    );
    let t = finished(&browser, 120);
    let field = |name: &str| form_field(&browser, name);
    assert_eq!(field("hidden"), json!("8,6"));
    assert_eq!(field("optimizer"), json!("momentum"));
    assert_eq!(field("augment"), json!("shift"));
    // 250 samples in batches of 64: 4 steps, progress every 2.
    assert_eq!(t["done"]["step"], json!(4), "{}", t["done"]);
    assert_eq!(t["history"].as_array().unwrap().len(), 2);
    // A warp chosen in the form reaches the options with its strengths (the flags' defaults
    // unless changed).
    let augment = browser.script(
        "const f = document.getElementById('train-form'); f.elements.augment.value = 'elastic'; \
         f.elements.rotation.value = '0.3'; return formOptions().augment",
    );
    assert_eq!(
        augment,
        json!({"kind": "elastic", "rotation": 0.3, "scale": 0.12, "shear": 0.15,
               "translation": 1.7, "elastic_alpha": 1, "elastic_sigma": 4})
    );
    // Widths that are not whole numbers are refused in the form, before anything runs; a
    // network wider than the adapter holds by the plan, in one line naming the layer and the
    // limit (the adapter's, not a number of the page's: 65 units train, see
    // `the_page_trains_wide_and_deep_networks_as_the_native_trainer_does`).
    browser.script(
        "const f = document.getElementById('train-form'); f.elements.hidden.value = '8,x'; \
         document.getElementById('train-start').click(); return 1",
    );
    let error = browser.text("train-error");
    assert!(error.starts_with("hidden layers: whole numbers"), "{error}");
    browser.script(
        "const f = document.getElementById('train-form'); f.elements.hidden.value = '2000000'; \
         document.getElementById('train-start').click(); return 1",
    );
    browser.wait("the plan's refusal", |b| !b.text("train-error").is_empty());
    let error = browser.text("train-error");
    assert!(
        error.contains("options: hidden [2000000]: W1 (2000000 × 784) needs 5982 MiB, more than")
            && error.contains("MiB this GPU holds in one buffer")
            && !error.contains('\n'),
        "{error}"
    );
}

#[test]
fn a_lost_device_keeps_the_last_progress_point_and_start_continues_from_it() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    browser.script(
        "startTraining({hidden: [8], optimizer: 'adam', alpha: 0.003, batch_size: 10, \
         epochs: 400, dev_size: 50, log_every: 25}); return 1",
    );
    browser.wait_for("the first progress point", 120, |b| {
        !trainer(b)["history"].as_array().unwrap().is_empty()
    });
    browser.script("worker().postMessage({type: 'lose-device'}); return 1");
    browser.wait_for("the state kept", 60, |b| {
        b.text("train-status").contains("is kept")
    });
    let error = browser.text("train-error");
    assert!(error.starts_with("the GPU device was lost"), "{error}");
    let kept = browser
        .script("return window.trainer.opened.step")
        .as_u64()
        .unwrap();
    assert!(kept >= 25 && kept.is_multiple_of(25), "kept step {kept}");
    browser.click("#train-start");
    browser.wait_for("a progress point of the continued run", 120, |b| {
        let t = trainer(b);
        assert!(
            t["error"].is_null(),
            "the continued run failed: {}",
            t["error"]
        );
        !t["history"].as_array().unwrap().is_empty()
    });
    let t = trainer(&browser);
    assert_eq!(
        t["history"][0][0],
        json!(kept + 25),
        "continued from step {kept}"
    );
    browser.click("#train-stop");
    finished(&browser, 60);
}

#[test]
fn without_webgpu_the_panel_says_so_and_drawing_still_works() {
    let (_server, address) = start_server();
    // No --enable-unsafe-webgpu (and --disable-gpu): Chromium here offers no WebGPU.
    let browser = Browser::start();
    browser.call("POST", "/url", json!({"url": format!("http://{address}/")}));
    browser.wait("the model", |b| b.text("summary").contains("784-8-10"));
    browser.click("#train-start");
    browser.wait("the panel's message", |b| !b.text("train-error").is_empty());
    let error = browser.text("train-error");
    assert!(
        error.contains("no WebGPU") || error.contains("no adapter"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    browser.draw(&[vec![(0.5, 0.1), (0.5, 0.5), (0.5, 0.9)]]);
    browser.wait("an answer to the drawing", |b| !b.text("digit").is_empty());
    assert_eq!(browser.text("draw-error"), "");
}

/// What the page scored its network on the test digits at: (accuracy, loss, digits), once the
/// run's "tested" answer came.
fn tested(browser: &Browser) -> (f64, f64, u64) {
    browser.wait_for("the test digits scored", 60, |b| {
        let t = trainer(b);
        assert!(t["error"].is_null(), "scoring: {}", t["error"]);
        !b.script("return window.trainer.tested || null").is_null()
    });
    let t = browser.script("return window.trainer.tested");
    let number = |key: &str| t[key].as_f64().unwrap_or_else(|| panic!("{key}: {t}"));
    (
        number("accuracy"),
        number("loss"),
        t["labelled"].as_u64().unwrap(),
    )
}

/// The accuracy and mean loss of `params` (784-8-10 ReLU, the page's layout) on the embedded
/// test digits, on the CPU.
fn scored_natively(params: &Value) -> (f64, f64) {
    let shape = Model::new(&[8], Activation::Relu, Init::He, 1).unwrap();
    let flat: Vec<f32> = params
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let model = ParamLayout::dense(&shape).unpack(&flat, Activation::Relu);
    let test = EMBEDDED_TEST.load().unwrap();
    let labels = test.labels.as_ref().unwrap();
    let pool = std::sync::Arc::new(ImagePool::default());
    let sizes = ListSizes {
        train: 0,
        dev: 0,
        test: 0,
    };
    let mut cpu = CpuBackend::new(&model, pool, sizes, test.len()).unwrap();
    let logits = cpu.classify(&test.images).unwrap();
    let (mut right, mut loss) = (0, 0.0);
    for (z, &label) in logits.chunks_exact(10).zip(labels) {
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
        loss += sum.ln() + max - z[label as usize] as f64;
        right += usize::from(argmax_columns(z)[0] == label);
    }
    let n = labels.len() as f64;
    (right as f64 / n, loss / n)
}

/// The figures the panel shows: (title, [(figure, value, note)]).
fn figures(browser: &Browser) -> (String, Vec<(String, String, String)>) {
    let names = ["dev", "test", "time", "speed", "steps"];
    let shown = names
        .iter()
        .map(|name| {
            let value = browser.text(&format!("figure-{name}"));
            let note = browser.text(&format!("figure-{name}-note"));
            (name.to_string(), value, note)
        })
        .collect();
    (browser.text("train-result-title"), shown)
}

/// How many elements `css` selects in the page.
fn count(browser: &Browser, css: &str) -> u64 {
    browser
        .script(&format!("return document.querySelectorAll('{css}').length"))
        .as_u64()
        .unwrap()
}

/// A finished run's figures stay: its dev and test accuracy (the test digits scored in the
/// browser with the page's kernels, as the CPU scores the same network), the time, the speed
/// and the steps done; its curves have axes, ticks and a legend, and a one-point run (one
/// epoch) shows its point.
#[test]
fn a_finished_run_keeps_its_figures_and_draws_its_curves() {
    let (_server, address) = start_server();
    let browser = open_page(address);
    // 250 samples in batches of 64: one epoch is 4 steps, one progress point (at its end).
    browser.script(
        "startTraining({hidden: [8], alpha: 0.1, batch_size: 64, epochs: 1, dev_size: 50, \
         seed: 3}); return 1",
    );
    let t = finished(&browser, 120);
    let points = t["history"].as_array().unwrap().len();
    assert_eq!(points, 1, "{}", t["history"]);
    let (accuracy, loss, digits) = tested(&browser);
    assert_eq!(digits, 10_000);
    let (want_accuracy, want_loss) = scored_natively(&t["done"]["params"]);
    // A digit whose two best logits tie within float32 rounding may go either way.
    assert!(
        (accuracy - want_accuracy).abs() <= 5e-4,
        "test accuracy {accuracy} in the browser, {want_accuracy} natively"
    );
    assert!(
        (loss - want_loss).abs() <= 1e-4 + 1e-3 * want_loss,
        "test loss {loss} in the browser, {want_loss} natively"
    );
    assert_final_figures(&browser, accuracy);
    // One point: a marker for each series (batches and dev) in each chart.
    for chart in ["curve-loss", "curve-accuracy"] {
        let markers = count(&browser, &format!("#{chart} circle.point"));
        assert_eq!(markers, 2, "{chart}");
    }

    // 12 steps, a point every 2: lines, and both axes with ticks and labels, and a legend.
    browser.script(
        "startTraining({hidden: [8], alpha: 0.1, batch_size: 64, epochs: 3, dev_size: 50, \
         log_every: 2}); return 1",
    );
    let t = finished(&browser, 120);
    assert_eq!(t["history"].as_array().unwrap().len(), 6);
    tested(&browser);
    assert_curves_have_axes_and_a_legend(&browser, 12.0);
    assert_eq!(figures(&browser).1[4].1, "12 of 12");
    screenshot_of_a_finished_run();
}

/// The figures of the one-epoch run of `a_finished_run_keeps_its_figures_and_draws_its_curves`,
/// whose test accuracy was `accuracy`.
fn assert_final_figures(browser: &Browser, accuracy: f64) {
    let (title, shown) = figures(browser);
    assert_eq!(title, "Done after step 4 of 4");
    let value = |name: &str| shown.iter().find(|f| f.0 == name).unwrap().clone();
    let percent = |text: &str| text.ends_with('%') && text[..text.len() - 1].parse::<f64>().is_ok();
    let (_, dev, dev_note) = value("dev");
    assert!(
        percent(&dev) && dev_note.starts_with("dev loss"),
        "{shown:?}"
    );
    let (_, test, test_note) = value("test");
    assert_eq!(test, format!("{:.1}%", 100.0 * accuracy), "{shown:?}");
    assert!(test_note.contains("10,000 test digits"), "{shown:?}");
    let (_, time, _) = value("time");
    assert!(time.ends_with(" s"), "{shown:?}");
    let (_, speed, _) = value("speed");
    assert!(speed.replace(',', "").parse::<u64>().is_ok(), "{shown:?}");
    assert_eq!(
        value("steps"),
        ("steps".into(), "4 of 4".into(), "epoch 1 of 1".into())
    );
}

/// Both charts have a line per series, an x axis (the step) from 0 to at least `steps` and a
/// y axis, each with ticks, and a legend naming the series.
fn assert_curves_have_axes_and_a_legend(browser: &Browser, steps: f64) {
    for chart in ["curve-loss", "curve-accuracy"] {
        let lines = count(browser, &format!("#{chart} polyline.series"));
        assert_eq!(lines, 2, "{chart}");
        for axis in ["x", "y"] {
            let ticks = count(browser, &format!("#{chart} .axis.{axis} .tick"));
            assert!(ticks >= 3, "{chart}: {ticks} ticks on the {axis} axis");
        }
        let legend = browser.script(&format!(
            "return Array.from(document.querySelectorAll('#{chart} .legend text'), \
             t => t.textContent)"
        ));
        assert_eq!(legend, json!(["batches (mean)", "dev"]), "{chart}");
    }
    let x_ticks = browser.script(
        "return Array.from(document.querySelectorAll('#curve-loss .axis.x .tick text'), \
         t => Number(t.textContent))",
    );
    let x_ticks: Vec<f64> = serde_json::from_value(x_ticks).unwrap();
    assert!(
        x_ticks[0] == 0.0 && *x_ticks.last().unwrap() >= steps,
        "{x_ticks:?}"
    );
    let y_ticks = browser.script(
        "return Array.from(document.querySelectorAll('#curve-accuracy .axis.y .tick text'), \
         t => t.textContent)",
    );
    assert_eq!(y_ticks, json!(["0%", "20%", "40%", "60%", "80%", "100%"]));
}

/// The README's picture of the Train panel after a short run on the embedded digits (set
/// MNIST_GPU_TRAIN_SCREENSHOT=docs/serve_train.png), in a 1280-pixel-wide window.
fn screenshot_of_a_finished_run() {
    let Some(path) = std::env::var_os("MNIST_GPU_TRAIN_SCREENSHOT") else {
        return;
    };
    let (_server, address) = serve_with_env(None, &["--backend", "cpu"], &[]);
    let browser = Browser::with_webgpu();
    browser.call(
        "POST",
        "/window/rect",
        json!({"width": 1280, "height": 1600}),
    );
    let hash = "hidden=32&optimizer=adam&alpha=0.003&batch_size=64&epochs=4&dev_size=1000\
                &log_every=20&augment=affine&start=1";
    browser.call(
        "POST",
        "/url",
        json!({"url": format!("http://{address}/#{hash}")}),
    );
    finished(&browser, 600);
    tested(&browser);
    browser.script("document.getElementById('train-panel').scrollIntoView(); return 1");
    let panel = browser.element("#train-panel");
    let png = browser.call("GET", &format!("/element/{panel}/screenshot"), json!({}));
    std::fs::write(&path, base64_decode(png.as_str().unwrap())).unwrap();
}

/// Whether the Train form's field `name` is shown.
fn shown(browser: &Browser, name: &str) -> bool {
    browser
        .script(&format!(
            "return document.getElementById('train-form').elements['{name}'].getClientRects().length > 0"
        ))
        .as_bool()
        .unwrap()
}

/// The form starts with the server's values and menus, and shows only the fields that apply:
/// iterations in full batch, epochs in mini-batch; a warp's strengths for affine and elastic,
/// the elastic field's for elastic alone. Hidden fields keep their values in the link.
#[test]
fn the_form_shows_only_the_fields_that_apply() {
    let (_server, address) = start_server();
    let (status, body) = http(address, "GET", "/api/train/form", b"");
    assert_eq!(status, 200, "{body}");
    let served = json_of(&body);
    // The form has no width or depth limit of its own (the adapter's are the plan's), and
    // says so in the hidden field's hint, which the page shows.
    assert!(served.get("limits").is_none(), "{served}");
    let hint = served["hints"]["hidden"].as_str().unwrap();
    assert!(hint.contains("as wide as this GPU holds"), "{hint}");
    assert_eq!(
        served["choices"]["augment"],
        json!(["off", "shift", "affine", "elastic"])
    );
    let browser = Browser::start();
    browser.call("POST", "/url", json!({"url": format!("http://{address}/")}));
    browser.wait("the form's values", |b| {
        !form_field(b, "alpha").as_str().unwrap().is_empty()
    });
    let title =
        browser.script("return document.getElementById('train-form').elements.hidden.title");
    assert_eq!(title, json!(hint));
    for (name, value) in served["fields"].as_object().unwrap() {
        let field = form_field(&browser, name);
        let field = field.as_str().unwrap();
        match value {
            Value::Null => assert_eq!(field, "", "{name}"),
            Value::String(s) => assert_eq!(field, s, "{name}"),
            number => assert_eq!(field.parse::<f64>().ok(), number.as_f64(), "{name}"),
        }
    }
    fields_follow_the_mode_and_the_warp(&browser);
    // A link with a batch size shows epochs; without, iterations.
    for (hash, epochs) in [
        ("batch_size=32&epochs=2", true),
        ("batch_size=&iterations=7", false),
    ] {
        // From another page, so that the page loads again.
        browser.call("POST", "/url", json!({"url": "about:blank"}));
        browser.call(
            "POST",
            "/url",
            json!({"url": format!("http://{address}/#{hash}")}),
        );
        browser.wait("the form's values", |b| {
            !form_field(b, "alpha").as_str().unwrap().is_empty()
        });
        assert_eq!(
            fields_shown(&browser, &["epochs", "iterations"]),
            [epochs, !epochs],
            "{hash}"
        );
    }
}

/// Sets the form's field `name` to `value`, as typing does.
fn set_field(browser: &Browser, name: &str, value: &str) {
    browser.script(&format!(
        "const f = document.getElementById('train-form'); f.elements['{name}'].value = '{value}'; \
         f.elements['{name}'].dispatchEvent(new Event('input', {{bubbles: true}})); return 1"
    ));
}

/// Whether each of the form's fields `names` is shown.
fn fields_shown(browser: &Browser, names: &[&str]) -> Vec<bool> {
    names.iter().map(|n| shown(browser, n)).collect()
}

/// The mode's length and the augmentation's strengths are shown only where they apply; a
/// hidden field keeps its value, and the link keeps it.
fn fields_follow_the_mode_and_the_warp(browser: &Browser) {
    let length = ["epochs", "iterations"];
    set_field(browser, "batch_size", "64");
    assert_eq!(fields_shown(browser, &length), [true, false]);
    set_field(browser, "batch_size", "");
    assert_eq!(fields_shown(browser, &length), [false, true]);
    let warps = ["rotation", "scale", "shear", "translation"];
    for (augment, warp, elastic) in [
        ("off", false, false),
        ("shift", false, false),
        ("affine", true, false),
        ("elastic", true, true),
    ] {
        set_field(browser, "augment", augment);
        assert_eq!(fields_shown(browser, &warps), [warp; 4], "{augment}");
        let field = fields_shown(browser, &["elastic_alpha", "elastic_sigma"]);
        assert_eq!(field, [elastic; 2], "{augment}");
    }
    set_field(browser, "augment", "off");
    set_field(browser, "elastic_sigma", "3");
    browser.script("formToHash(); return 1");
    let hash = browser.script("return location.hash");
    let hash = hash.as_str().unwrap();
    assert!(
        hash.contains("elastic_sigma=3") && hash.contains("iterations="),
        "{hash}"
    );
}

//! `mnist-gpu serve` end to end: the JSON API (answers, bad requests, many clients at once)
//! over plain HTTP, and the page in a real browser — headless Chromium driven through
//! WebDriver (Debian's `chromium` and `chromium-driver`; `./test.sh` installs them), which
//! draws digits on the canvas with pointer events and reads what the page answers.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mnist_gpu::backend::Backend;
use mnist_gpu::cpu::CpuBackend;
use mnist_gpu::data::{EMBEDDED_TEST, PIXELS};
use serde_json::json;

use crate::common::browser::{
    base64_decode, http, json_of, response, serve, serve_with_env, Browser,
};
use crate::common::output::run_in;

/// A model file, trained once per test process with `args` (in a directory kept for the run).
fn model(name: &str, args: &[&str]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let path = dir.join(name);
    if !path.exists() {
        let mut all = vec!["--backend", "cpu", "--save", name];
        all.extend(args);
        let out = run_in(dir, &all);
        assert!(
            out.status.success(),
            "training {name}: {}",
            common::output::describe(&out)
        );
    }
    path
}

/// The quick default network (784-10-10, 91% on the test digits).
fn small_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| model("small.safetensors", &["--iterations", "300"]))
        .clone()
}

/// The predictions the model makes for the first `n` test digits, computed here.
fn expected_digits(model: &Path, n: usize) -> (Vec<u8>, Vec<u8>) {
    let model = mnist_gpu::model_file::load(model).unwrap().model;
    let test = EMBEDDED_TEST.load().unwrap();
    let pool = Arc::new(mnist_gpu::data::pool::ImagePool::default());
    let sizes = mnist_gpu::data::pool::ListSizes {
        train: 0,
        dev: 0,
        test: 0,
    };
    let mut cpu = CpuBackend::new(&model, pool, sizes, n).unwrap();
    let images = test.images[..n * PIXELS].to_vec();
    let digits = mnist_gpu::model::argmax_columns(&cpu.classify(&images).unwrap());
    (images, digits)
}

fn still_serving(address: SocketAddr) {
    let (status, body) = http(address, "GET", "/api/model", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["hidden"], json!([10]));
}

#[test]
fn predictions_match_the_model() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (images, digits) = expected_digits(&model, 20);
    let pixels = |i: usize| images[i * PIXELS..(i + 1) * PIXELS].to_vec();
    let (status, body) = http(
        address,
        "POST",
        "/api/predict",
        json!({"pixels": pixels(3)}).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["digit"], digits[3]);
    let probabilities: Vec<f64> = serde_json::from_value(answer["probabilities"].clone()).unwrap();
    assert_eq!(probabilities.len(), 10);
    assert!(
        (probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9,
        "{probabilities:?}"
    );
    // A batch: a list of answers, in order.
    let batch: Vec<Vec<u8>> = (0..20).map(pixels).collect();
    let (status, body) = http(
        address,
        "POST",
        "/api/predict",
        json!({"images": batch}).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let answers = json_of(&body);
    let got: Vec<u64> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["digit"].as_u64().unwrap())
        .collect();
    assert_eq!(got, digits.iter().map(|&d| d as u64).collect::<Vec<_>>());
    // The page and the other endpoints.
    let (status, page) = http(address, "GET", "/", b"");
    assert!(
        status == 200 && page.contains("<canvas id=\"pad\""),
        "{status}"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page fetches from elsewhere"
    );
    let (status, body) = http(address, "GET", "/api/test?misclassified=true", b"");
    assert_eq!(status, 200, "{body}");
    let t = json_of(&body);
    assert_ne!(t["label"], t["digit"], "{t}");
    assert_eq!(t["pixels"].as_array().unwrap().len(), PIXELS);
    let (status, body) = http(address, "GET", "/api/confusion", b"");
    let c = json_of(&body);
    let total: u64 = c["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!((status, total), (200, 10_000));
    let (status, body) = http(address, "GET", "/api/weights", b"");
    let w = json_of(&body);
    assert_eq!((status, w["units"].as_array().unwrap().len()), (200, 10));
    // The icon, where the page links it and where browsers look by default.
    assert!(page.contains(r#"<link rel="icon" href="/favicon.svg""#));
    for path in ["/favicon.svg", "/favicon.ico"] {
        let (status, body) = http(address, "GET", path, b"");
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.starts_with("<svg") && body.contains("</svg>"),
            "{path}: {body}"
        );
    }
}

/// The page loads with nothing missing (no error in the browser's console, the icon among
/// what it asks for), and shows the model's file as a table: its shape, the command that
/// trained it, its accuracies, and its options as a table of their own, not as raw JSON.
#[test]
fn the_page_loads_cleanly_and_shows_the_model_as_a_table() {
    let (_server, address) = serve(&small_model(), &["--backend", "cpu"]);
    let browser = Browser::start();
    browser.call("POST", "/url", json!({"url": format!("http://{address}/")}));
    browser.wait("the model", |b| b.text("summary").contains("784-10-10"));
    browser.wait("the model's table", |b| {
        b.script("return document.querySelector('#metadata table.facts') !== null") == json!(true)
    });
    let rows = browser.script(
        "return Array.from(document.querySelectorAll('#metadata table.facts > tbody > tr'), \
         r => [r.cells[0].textContent, r.cells[1].textContent])",
    );
    let rows: Vec<(String, String)> = serde_json::from_value(rows).unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|(key, _)| key == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
            .1
            .clone()
    };
    assert_eq!(row("shape"), "784-10-10");
    assert!(
        row("training command").contains("--save small.safetensors"),
        "{rows:?}"
    );
    let accuracy = row("test accuracy");
    assert!(accuracy.ends_with('%'), "{accuracy}");
    let options = browser.script(
        "return Array.from(document.querySelectorAll('#metadata table.options th'), \
         h => [h.textContent, h.nextElementSibling.textContent])",
    );
    let options: Vec<(String, String)> = serde_json::from_value(options).unwrap();
    assert!(
        options.contains(&("iterations".into(), "300".into())),
        "{options:?}"
    );
    assert!(
        options.contains(&("hidden".into(), "10".into())),
        "{options:?}"
    );
    assert!(
        !browser.text("metadata").contains("{\""),
        "raw JSON: {rows:?}"
    );
    // The page's requests all answered (a missing /favicon.ico used to log a 404).
    browser.wait("the first test digit", |b| {
        b.text("test-about").starts_with("test image")
    });
    assert_eq!(browser.console_errors(), Vec::<String>::new());
}

/// Bad requests get a 4xx and a one-line JSON error; the server serves on.
#[test]
fn bad_requests_are_refused_and_the_server_serves_on() {
    let (_server, address) = serve(&small_model(), &["--backend", "cpu"]);
    let zeros = |n: usize| json!({"pixels": vec![0; n]}).to_string();
    let hundred_mb = vec![b' '; 100 << 20];
    let mut out_of_range = vec![json!(0); 784];
    out_of_range[100] = json!(256);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "783 pixels",
            zeros(783).into_bytes(),
            400,
            "783 numbers, expected 784",
        ),
        ("785 pixels", zeros(785).into_bytes(), 400, "785 numbers"),
        (
            "a value out of range",
            json!({"pixels": out_of_range}).to_string().into_bytes(),
            400,
            "pixels[100]: 256 is outside 0–255",
        ),
        (
            "a string",
            json!({"pixels": vec!["x"; 784]}).to_string().into_bytes(),
            400,
            "pixels[0]",
        ),
        (
            "truncated JSON",
            zeros(784)[..1000].as_bytes().to_vec(),
            400,
            "not JSON",
        ),
        ("not JSON", b"pixels=0,0,0".to_vec(), 400, "not JSON"),
        (
            "no pixels",
            b"{\"image\": []}".to_vec(),
            400,
            "expected {\"pixels\"",
        ),
        (
            "an empty batch",
            b"{\"images\": []}".to_vec(),
            400,
            "images: 0 images",
        ),
        ("a 100 MB body", hundred_mb, 413, "over"),
    ];
    for (what, body, status, says) in cases {
        let (got, text) = http(address, "POST", "/api/predict", &body);
        assert_eq!(got, status, "{what}: {text}");
        assert_eq!(text.lines().count(), 1, "{what}: {text:?}");
        let error = json_of(&text)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {text}"))
            .to_string();
        assert!(error.contains(says), "{what}: {error}");
        still_serving(address);
    }
    // A 100 MB body that does not say its length up front (chunked) is cut off too.
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!("POST /api/predict HTTP/1.1\r\nHost: {address}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..100 {
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let (status, _) = response(stream);
    assert_eq!(status, 413);
    for (method, path, status) in [
        ("GET", "/nowhere", 404),
        ("DELETE", "/api/model", 405),
        ("GET", "/api/test?x=1", 400),
    ] {
        let (got, text) = http(address, method, path, b"");
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(json_of(&text)["error"].is_string());
    }
    still_serving(address);
}

/// 64 clients at once, 100 predictions each: every answer is the model's.
#[test]
fn many_clients_at_once_all_get_the_right_answers() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (images, digits) = expected_digits(&model, 200);
    let (images, digits) = (Arc::new(images), Arc::new(digits));
    let clients: Vec<_> = (0..64)
        .map(|client| {
            let (images, digits) = (images.clone(), digits.clone());
            std::thread::spawn(move || {
                for k in 0..100 {
                    let i = (client * 37 + k * 11) % 200;
                    let pixels = &images[i * PIXELS..(i + 1) * PIXELS];
                    let body = json!({"pixels": pixels}).to_string();
                    let (status, text) = http(address, "POST", "/api/predict", body.as_bytes());
                    assert_eq!(status, 200, "client {client}, request {k}: {text}");
                    assert_eq!(
                        json_of(&text)["digit"],
                        digits[i],
                        "client {client}, image {i}"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
}

/// The same API on the GPU backend (whatever adapter the machine has).
#[test]
fn the_gpu_backend_serves_the_same_answers() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "gpu"]);
    let (images, digits) = expected_digits(&model, 50);
    let batch: Vec<&[u8]> = images.chunks(PIXELS).collect();
    let (status, body) = http(
        address,
        "POST",
        "/api/predict",
        json!({"images": batch}).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let got: Vec<u64> = json_of(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["digit"].as_u64().unwrap())
        .collect();
    let agree = got
        .iter()
        .zip(digits.iter())
        .filter(|(g, d)| **g == **d as u64)
        .count();
    assert!(agree >= 49, "GPU and CPU agree on {agree} of 50");
    let (_, body) = http(address, "GET", "/api/model", b"");
    assert_eq!(json_of(&body)["backend"], "gpu");
}

// ---------------------------------------------------------------------------------------------
// The page in a browser
// ---------------------------------------------------------------------------------------------

/// Points along an arc of the ellipse centred at (cx, cy) with radii (rx, ry), from angle `from`
/// to `to` (degrees, counter-clockwise on the page: y grows downwards).
fn arc(cx: f64, cy: f64, rx: f64, ry: f64, from: f64, to: f64) -> Vec<(f64, f64)> {
    let steps = ((to - from).abs() / 10.0).ceil() as usize;
    (0..=steps)
        .map(|i| {
            let a = (from + (to - from) * i as f64 / steps as f64).to_radians();
            (cx + rx * a.cos(), cy - ry * a.sin())
        })
        .collect()
}

fn line(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    // Points every tenth of the box along each segment.
    let mut out = vec![points[0]];
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let steps = ((x1 - x0).hypot(y1 - y0) / 0.1).ceil().max(1.0) as usize;
        out.extend((1..=steps).map(|i| {
            let t = i as f64 / steps as f64;
            (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
        }));
    }
    out
}

/// Strokes of the digits 0–9 as a hand writes them, in the unit square (y downwards).
fn digit_strokes(digit: usize) -> Vec<Vec<(f64, f64)>> {
    match digit {
        0 => vec![arc(0.5, 0.5, 0.4, 0.48, 90.0, 450.0)],
        1 => vec![line(&[(0.55, 0.0), (0.45, 1.0)])],
        2 => {
            let mut s = arc(0.5, 0.3, 0.4, 0.28, 160.0, -40.0);
            s.extend(line(&[*s.last().unwrap(), (0.05, 1.0), (0.95, 1.0)]));
            vec![s]
        }
        3 => {
            let mut s = arc(0.5, 0.26, 0.36, 0.25, 150.0, -90.0);
            s.extend(arc(0.5, 0.74, 0.4, 0.25, 90.0, -150.0));
            vec![s]
        }
        4 => vec![
            line(&[(0.6, 0.0), (0.05, 0.62), (0.95, 0.62)]),
            line(&[(0.72, 0.3), (0.72, 1.0)]),
        ],
        5 => {
            let mut s = line(&[(0.9, 0.0), (0.2, 0.0), (0.15, 0.42)]);
            s.extend(arc(0.48, 0.7, 0.42, 0.3, 145.0, -150.0));
            vec![s]
        }
        6 => {
            let mut s = line(&[(0.75, 0.0), (0.4, 0.22), (0.18, 0.55)]);
            s.extend(arc(0.5, 0.72, 0.33, 0.28, 180.0, 530.0));
            vec![s]
        }
        7 => vec![line(&[(0.05, 0.0), (0.95, 0.0), (0.4, 1.0)])],
        8 => vec![
            arc(0.5, 0.25, 0.3, 0.25, 270.0, 630.0),
            arc(0.5, 0.74, 0.36, 0.26, 90.0, 450.0),
        ],
        9 => vec![
            arc(0.42, 0.3, 0.36, 0.3, 0.0, 370.0),
            line(&[(0.78, 0.28), (0.72, 1.0)]),
        ],
        _ => unreachable!(),
    }
}

/// With the README's most accurate model, the page recognises digits drawn on its canvas (at
/// least 9 of 0–9), and shows a random test digit with its label and prediction.
#[test]
fn the_page_recognises_drawn_digits_in_a_browser() {
    let model = model(
        "wide.safetensors",
        &[common::BEST_RUN, &["--dev-size", "0"]].concat(),
    );
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let browser = Browser::start();
    browser.call("POST", "/url", json!({"url": format!("http://{address}/")}));
    browser.wait("the model", |b| b.text("summary").contains("784-512-10"));
    // The test-digit panel shows a digit before any click, not two black boxes.
    browser.wait("the first test digit", |b| {
        b.text("test-about").starts_with("test image") && !b.text("test-label").is_empty()
    });
    let mut recognised = Vec::new();
    for digit in 0..10 {
        browser.click("#clear");
        browser.draw(&digit_strokes(digit));
        // Wait for the answer to the finished drawing: two reads in a row agree.
        browser.wait("an answer", |b| !b.text("digit").is_empty());
        let mut answer = browser.text("digit");
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = browser.text("digit");
            if now == answer {
                break;
            }
            answer = now;
        }
        eprintln!("drew {digit}: the page says {answer}");
        recognised.push(answer == digit.to_string());
    }
    let right = recognised.iter().filter(|&&r| r).count();
    assert!(
        right >= 9,
        "recognised {right} of 10 drawn digits: {recognised:?}"
    );

    browser.click("#random");
    browser.wait("a test digit", |b| !b.text("test-label").is_empty());
    let (label, said) = (browser.text("test-label"), browser.text("test-digit"));
    assert!(label.parse::<u8>().is_ok_and(|d| d < 10), "label {label:?}");
    assert!(
        said.parse::<u8>().is_ok_and(|d| d < 10),
        "prediction {said:?}"
    );
    assert!(
        browser.text("test-about").starts_with("test image"),
        "{}",
        browser.text("test-about")
    );

    // The README's picture: the page after drawing (set MNIST_GPU_SCREENSHOT=docs/serve.png).
    if let Some(path) = std::env::var_os("MNIST_GPU_SCREENSHOT") {
        browser.click("#clear");
        browser.draw(&digit_strokes(3));
        std::thread::sleep(Duration::from_millis(800));
        let png = browser.call("GET", "/screenshot", json!({}));
        let bytes = base64_decode(png.as_str().unwrap());
        std::fs::write(&path, bytes).unwrap();
    }
}

/// Pixels scaled to 0–1 (torchvision's `ToTensor()`) read as grey levels are a black image,
/// which used to be answered with a confident digit: refused with the fix, alone or in a batch.
/// A blank image (all 0) is still a fair question.
#[test]
fn pixels_scaled_to_0_1_are_refused() {
    let (_server, address) = serve(&small_model(), &["--backend", "cpu"]);
    let (images, _) = expected_digits(&small_model(), 2);
    let scaled: Vec<f64> = images[..PIXELS]
        .iter()
        .map(|&p| f64::from(p) / 255.0)
        .collect();
    let bodies = [
        ("one image", json!({ "pixels": scaled })),
        (
            "a batch",
            json!({ "images": [images[PIXELS..].to_vec(), scaled.clone()] }),
        ),
    ];
    for (what, body) in bodies {
        let (status, text) = http(address, "POST", "/api/predict", body.to_string().as_bytes());
        assert_eq!(status, 400, "{what}: {text}");
        let error = json_of(&text)["error"].as_str().unwrap().to_string();
        for part in ["0–1", "0–255", "multiply by 255"] {
            assert!(error.contains(part), "{what}: {error}");
        }
    }
    let blank = json!({"pixels": vec![0; PIXELS]}).to_string();
    let (status, text) = http(address, "POST", "/api/predict", blank.as_bytes());
    assert_eq!(status, 200, "a blank image: {text}");
}

/// `eval` with no `--data` evaluates on the embedded test digits, saying so, and its JSON's
/// `confusion` is `/api/confusion`'s `confusion` (one name for one thing; `matrix` stays as
/// the API's old alias).
#[test]
fn eval_defaults_to_the_embedded_digits_and_names_the_confusion_as_the_api() {
    let model = small_model();
    let dir = model.parent().unwrap();
    let file = model.file_name().unwrap().to_str().unwrap();
    let out = run_in(
        dir,
        &["eval", "--model", file, "--json", "--backend", "cpu"],
    );
    assert!(out.status.success(), "{}", common::output::describe(&out));
    let text = common::output::stdout(&out);
    assert!(text.contains("embedded"), "{text}");
    let report = common::output::json_summary(&out);
    assert_eq!(report["images"], 10_000);
    assert_eq!(report["data"], EMBEDDED_TEST.name());

    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (status, body) = http(address, "GET", "/api/confusion", b"");
    assert_eq!(status, 200, "{body}");
    let c = json_of(&body);
    assert_eq!(c["confusion"], report["confusion"], "{body}");
    assert_eq!(c["matrix"], c["confusion"]);
}

/// The Train panel's requests: a body of the wrong shape, a network the page cannot run, a
/// run too long to count, a step past the run's end or too far to replay, and a checkpoint of
/// a shape the page cannot run are each refused at once with one line, before any work (a far
/// step used to replay the run for minutes), and nothing refused is kept: the next checkpoint
/// opened is the first.
#[test]
fn bad_train_requests_are_refused_at_once_and_the_server_serves_on() {
    let (_server, address) = serve_with_env(None, &[], &[]);
    let full = |extra: serde_json::Value| {
        let mut request = json!({"options": {"hidden": [32], "iterations": 100}, "steps": 1});
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    };
    let far = json!({"options": {"hidden": [32], "iterations": 100_000_000, "augment": true}});
    let cases = [
        (
            "/api/train/plan",
            json!([1, 2]),
            "the body: expected a JSON object",
        ),
        (
            "/api/checkpoint",
            json!("x"),
            "the body: expected a JSON object",
        ),
        (
            "/api/train/plan",
            json!({"options": {"hidden": [300_000]}}),
            "options: hidden [300000]: W1 (300000 × 784) needs 898 MiB, more than the 128 MiB",
        ),
        (
            "/api/train/plan",
            json!({"options": {"hidden": [32], "batch_size": 10, "epochs": u64::MAX}}),
            "epochs of 900 steps are too many",
        ),
        (
            "/api/train/plan",
            full(json!({"from": u64::MAX})),
            "from: step 18446744073709551615 is past the run's end (100 steps)",
        ),
        (
            "/api/checkpoint",
            full(json!({"step": 101})),
            "step: step 101 is past the run's end (100 steps)",
        ),
        (
            "/api/checkpoint",
            full(json!({"step": 50, "history": [{"step": 51, "loss": 1.0}]})),
            "history[0]: expected a progress point {\"step\": 1 to 50",
        ),
        (
            "/api/checkpoint",
            full(json!({"step": 50, "history": "x"})),
            "history: expected a list",
        ),
        (
            "/api/train/plan",
            json!({"options": far["options"], "from": 1_000_000}),
            "a request replays at most",
        ),
        (
            "/api/checkpoint",
            json!({"options": far["options"], "step": 1_000_000}),
            "a request replays at most",
        ),
    ];
    for (path, request, says) in cases {
        let started = std::time::Instant::now();
        let (status, body) = http(address, "POST", path, request.to_string().as_bytes());
        let head: String = body.chars().take(300).collect();
        assert_eq!(status, 400, "{path} {request}: {head}");
        let error = json_of(&body)["error"].as_str().unwrap().to_string();
        assert!(error.contains(says) && !error.contains('\n'), "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} {request}: slow"
        );
        let (status, _) = http(address, "GET", "/api/shaders", b"");
        assert_eq!(status, 200);
    }
    // A checkpoint of a run the page cannot take (early stopping) is refused, and not kept:
    // the next one opened is id 0. (A wide one, 784-100-10, the page trains.)
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("stopping.safetensors", &["--patience", "3"][..]),
        ("narrow.safetensors", &[][..]),
    ] {
        let args = ["--backend", "cpu", "--hidden", "10", "--iterations", "1"];
        let out = run_in(
            dir.path(),
            &[&args[..], extra, &["--checkpoint", name]].concat(),
        );
        assert!(out.status.success(), "{}", common::output::describe(&out));
    }
    let open = |name: &str| {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        http(address, "POST", "/api/checkpoint/open", &bytes)
    };
    let (status, body) = open("stopping.safetensors");
    assert_eq!(status, 400, "{body}");
    assert!(json_of(&body)["error"]
        .as_str()
        .unwrap()
        .contains("patience (early stopping) is not offered in the page"));
    let (status, body) = open("narrow.safetensors");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["id"], json!(0));
}

// ---------------------------------------------------------------------------------------------
// Under load: binary bodies, the room for bodies, the checkpoint store, answers in parallel,
// and the stop
// ---------------------------------------------------------------------------------------------

/// `POST /api/predict` with `content_type` on its own connection: the status, the head (its
/// header lines) and the body.
fn post(address: SocketAddr, content_type: &str, body: &[u8]) -> (u16, String, String) {
    post_to(address, "/api/predict", content_type, body)
}

/// `POST path` with `content_type`, as `post`.
fn post_to(
    address: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut text = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A one-line JSON error with `status` that says `says`.
fn assert_refused(what: &str, (status, _, body): &(u16, String, String), want: u16, says: &str) {
    assert_eq!(*status, want, "{what}: {body}");
    assert_eq!(body.lines().count(), 1, "{what}: {body:?}");
    let error = json_of(body)["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains(says), "{what}: {error}");
}

/// A binary body (784 bytes an image) is answered as the same images in a JSON batch are, to
/// the byte; one of the wrong length, an empty one, one of too many images, a damaged picture
/// and a picture in a format not read are refused with one line.
#[test]
fn binary_bodies_answer_as_json_batches_do_and_bad_ones_are_refused() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (images, _) = expected_digits(&model, 5);
    let batch: Vec<&[u8]> = images.chunks(PIXELS).collect();
    let json_batch = json!({ "images": batch }).to_string();
    let (status, _, as_json) = post(address, "application/json", json_batch.as_bytes());
    assert_eq!(status, 200, "{as_json}");
    let (status, _, as_binary) = post(address, "application/octet-stream", &images);
    assert_eq!((status, &as_binary), (200, &as_json));
    // One image in binary: a list of one.
    let one = json!({ "images": [batch[0]] }).to_string();
    let (_, _, one_json) = post(address, "application/json", one.as_bytes());
    let one_binary = post(address, "application/octet-stream; x=1", &images[..PIXELS]);
    assert_eq!((one_binary.0, &one_binary.2), (200, &one_json));
    let cases: [(&str, Vec<u8>, &str, u16, &str); 5] = [
        (
            "783 bytes",
            vec![0; 783],
            "application/octet-stream",
            400,
            "783 bytes, not a whole number of 784-byte images",
        ),
        (
            "no bytes",
            Vec::new(),
            "application/octet-stream",
            400,
            "the body is empty",
        ),
        (
            "1,001 images",
            vec![0; 1001 * PIXELS],
            "application/octet-stream",
            400,
            "holds 1001 images; send 1 to 1000",
        ),
        (
            "a cut PNG",
            b"\x89PNG\r\n".to_vec(),
            "image/png",
            400,
            "the uploaded picture",
        ),
        (
            "a GIF",
            b"GIF89a".to_vec(),
            "image/gif",
            415,
            "unsupported media type image/gif",
        ),
    ];
    for (what, body, content_type, status, says) in cases {
        assert_refused(what, &post(address, content_type, &body), status, says);
        still_serving(address);
    }
}

/// With the room for bodies full (a tiny `--max-in-flight`, held by a body that is slow to
/// arrive), a request waits `--in-flight-wait-ms`, then gets 503 with `Retry-After`; a body
/// larger than the room is refused at once (413); once the slow body is done, requests are
/// answered again.
#[test]
fn a_full_room_for_bodies_gets_503_with_retry_after() {
    let model = small_model();
    let room = ["--max-in-flight", "8K", "--in-flight-wait-ms", "300"];
    let (_server, address) = serve(&model, &[&["--backend", "cpu"][..], &room].concat());
    let (images, _) = expected_digits(&model, 1);
    let one = json!({ "pixels": images }).to_string();
    assert!(
        one.len() > 1024,
        "a body larger than the small bodies' share (1 KiB of 8)"
    );
    assert_eq!(post(address, "application/json", one.as_bytes()).0, 200);
    // 6,000 of the large bodies' 7 KiB, held while the body trickles in.
    let mut slow = TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {address}\r\nContent-Length: 6000\r\n\
         Connection: close\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&[b' '; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let busy = post(address, "application/json", one.as_bytes());
    assert_refused("the room full", &busy, 503, "serve --max-in-flight");
    assert!(busy.1.contains("\r\nretry-after: 1"), "{}", busy.1);
    let over = post(address, "application/json", &vec![b' '; 7200]);
    assert_refused(
        "a body over the room",
        &over,
        413,
        "more than this server holds",
    );
    slow.write_all(&[b' '; 5900]).unwrap();
    let (status, _) = response(slow);
    assert_eq!(status, 400, "the slow body is no JSON");
    let (status, _, text) = post(address, "application/json", one.as_bytes());
    assert_eq!(status, 200, "{text}");
}

/// The checkpoints opened in the page are kept within `--checkpoints-held` bytes (the least
/// recently used goes first) and for `--checkpoint-ttl` after their last use: a run resuming
/// one dropped is told to open the file again (410); one never opened is still refused
/// (400); a checkpoint larger than the store is refused (413).
#[test]
fn opened_checkpoints_are_kept_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    for (name, hidden, seed) in [("a", "10", "1"), ("b", "10", "2"), ("big", "64", "1")] {
        let file = format!("{name}.safetensors");
        let args = [
            "--backend",
            "cpu",
            "--hidden",
            hidden,
            "--iterations",
            "1",
            "--seed",
            seed,
        ];
        let out = run_in(dir.path(), &[&args[..], &["--checkpoint", &file]].concat());
        assert!(out.status.success(), "{}", common::output::describe(&out));
    }
    let bytes = |name: &str| std::fs::read(dir.path().join(format!("{name}.safetensors"))).unwrap();
    let (a, b, big) = (bytes("a"), bytes("b"), bytes("big"));
    let held = (a.len().max(b.len()) * 3 / 2).to_string();
    assert!(
        big.len() > a.len().max(b.len()) * 3 / 2,
        "the big one is over the bound"
    );
    let args = ["--checkpoints-held", &held, "--checkpoint-ttl", "2"];
    let (_server, address) = serve_with_env(None, &args, &[]);
    let open = |bytes: &[u8]| http(address, "POST", "/api/checkpoint/open", bytes);
    let resume = |id: u64| {
        let plan = json!({"resume": id, "steps": 1}).to_string();
        http(address, "POST", "/api/train/plan", plan.as_bytes())
    };
    let id = |(status, body): (u16, String)| {
        assert_eq!(status, 200, "{body}");
        json_of(&body)["id"].as_u64().unwrap()
    };
    let refused = |(status, body): (u16, String), want: u16, says: &str| {
        assert_eq!(status, want, "{body}");
        let error = json_of(&body)["error"].as_str().unwrap().to_string();
        assert!(error.contains(says) && !error.contains('\n'), "{error}");
    };
    let first = id(open(&a));
    assert_eq!(resume(first).0, 200);
    let second = id(open(&b));
    assert_eq!((first, second), (0, 1));
    refused(resume(first), 410, "resume: checkpoint 0 is no longer held");
    refused(resume(first), 410, "open the file again");
    assert_eq!(resume(second).0, 200);
    refused(resume(7), 400, "resume: no checkpoint 7 was opened");
    refused(open(&big), 413, "serve --checkpoints-held");
    std::thread::sleep(Duration::from_millis(2500));
    refused(resume(second), 410, "kept for 2 s after their last use");
}

/// Many clients at once, singly and in batches, JSON and binary, get the very bytes one
/// client gets asking for one image at a time (the CPU's fused forward pass computes each
/// image's logits alone, whichever batch the workers gather it into).
#[test]
fn answers_in_parallel_agree_with_answers_in_turn_bit_for_bit() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (images, _) = expected_digits(&model, 48);
    let image = |i: usize| images[i * PIXELS..(i + 1) * PIXELS].to_vec();
    let alone: Vec<String> = (0..48)
        .map(|i| {
            let body = json!({ "pixels": image(i) }).to_string();
            let (status, _, text) = post(address, "application/json", body.as_bytes());
            assert_eq!(status, 200, "{text}");
            text
        })
        .collect();
    let (alone, images) = (Arc::new(alone), Arc::new(images));
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (alone, images) = (alone.clone(), images.clone());
            std::thread::spawn(move || {
                for k in 0..48 {
                    let i = (client * 7 + k * 5) % 48;
                    let pixels = &images[i * PIXELS..(i + 1) * PIXELS];
                    let (status, _, text) = if (client + k) % 2 == 0 {
                        let body = json!({ "pixels": pixels }).to_string();
                        post(address, "application/json", body.as_bytes())
                    } else {
                        post(address, "application/octet-stream", pixels)
                    };
                    assert_eq!(status, 200, "{text}");
                    let want = if (client + k) % 2 == 0 {
                        alone[i].clone()
                    } else {
                        format!("[{}]", alone[i])
                    };
                    assert_eq!(text, want, "client {client}, image {i}");
                }
                if client % 4 == 0 {
                    let (status, _, text) = post(address, "application/octet-stream", &images);
                    assert_eq!((status, text), (200, format!("[{}]", alone.join(","))));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
}

/// SIGTERM with a body still arriving, and SIGINT: the server stops taking connections, gives
/// the requests in flight a second, and exits with 143 or 130 (as a shell reports a process
/// the signal ended), within two seconds or so, not the body's 30 s.
#[cfg(unix)]
#[test]
fn a_signal_stops_the_server_within_a_second_or_two_under_load() {
    for (signal, status) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (mut server, address) = serve(&small_model(), &["--backend", "cpu"]);
        let mut slow = TcpStream::connect(address).unwrap();
        let head = format!(
            "POST /api/predict HTTP/1.1\r\nHost: {address}\r\nContent-Length: 100000\r\n\r\n"
        );
        slow.write_all(head.as_bytes()).unwrap();
        slow.write_all(&[b' '; 1000]).unwrap();
        still_serving(address);
        let asked = std::time::Instant::now();
        // SAFETY: a signal to the server this test started.
        assert_eq!(unsafe { libc::kill(server.0.id() as i32, signal) }, 0);
        let exited = loop {
            if let Some(exited) = server.0.try_wait().unwrap() {
                break exited;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(10),
                "still running after 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = asked.elapsed();
        assert_eq!(exited.code(), Some(status), "signal {signal}: {exited}");
        assert!(
            took < Duration::from_secs(3),
            "signal {signal}: exited after {took:?}"
        );
        assert!(TcpStream::connect(address).is_err(), "still listening");
    }
}

// ---------------------------------------------------------------------------------------------
// Pictures: uploaded, and the page's drawings, prepared by the code `predict` uses
// ---------------------------------------------------------------------------------------------

/// A test digit drawn black on white paper, 200 × 200, as PNG bytes.
fn on_paper_png(pixels: &[u8]) -> Vec<u8> {
    let side = 200;
    let paper: Vec<u8> = (0..side * side)
        .map(|i| 255 - pixels[(i / side * 28 / side) * 28 + i % side * 28 / side])
        .collect();
    let picture = image::GrayImage::from_raw(side as u32, side as u32, paper).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, image::ImageOutputFormat::Png)
        .unwrap();
    bytes.into_inner()
}

/// A PNG upload is answered as its prepared pixels are (`data::picture::prepare`, what
/// `predict` runs on files), says it was inverted and gives those pixels; `/api/prepare` gives
/// the same pixels, with or without a model. Pixels sent with a bright background are answered
/// with a warning; MNIST's own are not.
#[test]
fn pictures_are_prepared_as_predict_prepares_them_and_bright_pixels_are_warned_of() {
    let model = small_model();
    let (_server, address) = serve(&model, &["--backend", "cpu"]);
    let (images, _) = expected_digits(&model, 1);
    let png = on_paper_png(&images);
    let prepared = mnist_gpu::data::picture::prepare(&png, "test").unwrap();
    assert!(prepared.inverted);

    let (status, _, body) = post(address, "image/png", &png);
    assert_eq!(status, 200, "{body}");
    let answer = json_of(&body);
    assert_eq!(answer["inverted"], json!(true), "{body}");
    assert_eq!(answer["pixels"], json!(prepared.pixels), "{body}");
    let as_pixels = json!({ "pixels": prepared.pixels }).to_string();
    let (_, _, by_pixels) = post(address, "application/json", as_pixels.as_bytes());
    let by_pixels = json_of(&by_pixels);
    assert_eq!(answer["digit"], by_pixels["digit"]);
    assert_eq!(answer["probabilities"], by_pixels["probabilities"]);
    assert!(by_pixels.get("warning").is_none(), "{by_pixels}");

    // The page's drawings go through /api/prepare, which needs no model.
    let (_bare, bare) = serve_with_env(None, &["--backend", "cpu"], &[]);
    for at in [address, bare] {
        let (status, _, body) = post_to(at, "/api/prepare", "image/png", &png);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json_of(&body)["pixels"], json!(prepared.pixels));
        assert_eq!(json_of(&body)["inverted"], json!(true));
        let refused = post_to(at, "/api/prepare", "application/json", b"{}");
        assert_refused(
            "JSON to /api/prepare",
            &refused,
            415,
            "image/png or image/jpeg",
        );
    }

    // MNIST's digit inverted, sent as pixels: answered, with the warning.
    let inverted: Vec<u8> = images.iter().map(|&v| 255 - v).collect();
    let batch = json!({ "images": [&images[..], &inverted[..]] }).to_string();
    let (status, _, body) = post(address, "application/json", batch.as_bytes());
    assert_eq!(status, 200, "{body}");
    let answers = json_of(&body);
    assert!(answers[0].get("warning").is_none(), "{body}");
    let warning = answers[1]["warning"].as_str().unwrap_or("");
    assert!(warning.contains("background is bright"), "{body}");
    let (_, _, binary) = post(address, "application/octet-stream", &inverted);
    assert!(binary.contains("background is bright"), "{binary}");
}

//! `mnist-gpu bench` end to end: the JSON array it prints last (one entry per batch size,
//! the fields the peers' scripts share), the plot files, `--compare`, and one clean line on
//! stderr (never a panic) for bad options.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::output::{assert_no_panic, assert_one_line_error as one_line_error, describe};

/// Runs `mnist-gpu bench ARGS` in `dir`, with XDG_RUNTIME_DIR there so that a Vulkan driver
/// has nothing to complain about and WGPU_ADAPTER_NAME cleared so the caller's cannot pick one.
pub(crate) fn bench(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
        .arg("bench")
        .args(args)
        .current_dir(dir)
        .env("XDG_RUNTIME_DIR", dir)
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .expect("the binary runs")
}

/// A successful run's last stdout line, which must be a JSON array.
pub(crate) fn json_array(out: &Output) -> Vec<Value> {
    assert_no_panic(out);
    assert!(out.status.success(), "the run failed:\n{}", describe(out));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    match serde_json::from_str(last) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("last stdout line is not a JSON array ({other:?}): {last:?}"),
    }
}

/// Checks the fields every entry has, and returns (batch_size, samples_per_second).
fn check_entry(entry: &Value, backend: &str, samples: u64) -> (u64, f64) {
    assert_eq!(entry["backend"], backend, "{entry}");
    assert!(
        entry["adapter"].as_str().is_some_and(|a| !a.is_empty()),
        "{entry}"
    );
    assert!(entry["software_adapter"].is_boolean(), "{entry}");
    assert_eq!(entry["samples"], samples, "{entry}");
    assert_eq!(entry["hidden"], serde_json::json!([10]), "{entry}");
    assert!(entry["steps"].as_u64().is_some_and(|s| s >= 1), "{entry}");
    assert!(
        entry["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{entry}"
    );
    let rate = entry["samples_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no samples_per_second in {entry}"));
    assert!(rate.is_finite() && rate > 0.0, "{entry}");
    let batch = entry["batch_size"]
        .as_u64()
        .unwrap_or_else(|| panic!("no batch_size in {entry}"));
    (batch, rate)
}

#[test]
fn cpu_bench_prints_one_json_entry_per_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        dir.path(),
        &[
            "--backend",
            "cpu",
            "--samples",
            "600",
            "--batch-sizes",
            "64,256,full",
            "--json",
        ],
    );
    let entries = json_array(&out);
    let batches: Vec<u64> = entries
        .iter()
        .map(|e| check_entry(e, "cpu", 600).0)
        .collect();
    assert_eq!(batches, [64, 256, 600]);
    assert_eq!(entries[2]["full_batch"], true);
    assert_eq!(entries[0]["software_adapter"], false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("samples/s"), "no table:\n{text}");
}

/// `--products`: one JSON row per layer, batch size and product, each with positive rates on
/// one thread and on all, beside a positive peak; `--optimizer adam` times Adam's steps.
#[test]
fn bench_times_the_wide_products_and_takes_an_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--products",
        "--hidden",
        "130",
        "--batch-sizes",
        "64",
        "--json",
    ];
    let rows = json_array(&bench(dir.path(), &args));
    let products: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r["units"].as_u64().unwrap(), r["product"].as_str().unwrap()))
        .collect();
    let names = ["forward", "input_grad", "weight_grad"];
    let want: Vec<(u64, &str)> = [130, 10]
        .iter()
        .flat_map(|&u| names.iter().map(move |&p| (u, p)))
        .collect();
    assert_eq!(products, want);
    for row in &rows {
        let positive = |v: &Value| v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0);
        assert!(
            row["gflops"].as_array().unwrap().iter().all(positive),
            "{row}"
        );
        assert!(
            row["peak_gflops"].as_array().unwrap().iter().all(positive),
            "{row}"
        );
    }
    let args = ["--backend", "cpu", "--hidden", "130", "--samples", "300"];
    let out = bench(
        dir.path(),
        &[
            &args[..],
            &["--batch-sizes", "64", "--optimizer", "adam", "--json"],
        ]
        .concat(),
    );
    assert_eq!(json_array(&out).len(), 1);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(", adam;"),
        "{}",
        describe(&out)
    );
}

#[test]
fn gpu_bench_names_its_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        dir.path(),
        &[
            "--backend",
            "gpu",
            "--samples",
            "500",
            "--batch-sizes",
            "100,full",
            "--json",
        ],
    );
    let entries = json_array(&out);
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (entry, want) in entries.iter().zip([100, 500]) {
        assert_eq!(check_entry(entry, "gpu", 500).0, want);
    }
    // Nobody may take a software adapter's timings for a GPU's.
    if entries[0]["software_adapter"] == true {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("(software adapter)"), "{text}");
        assert!(text.contains("not a GPU"), "{text}");
    }
}

/// Each entry names the path that ran; `--path reference` times the per-operation kernels.
#[test]
fn bench_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--samples", "300", "--batch-sizes", "64", "--json"];
    let entries = json_array(&bench(
        dir.path(),
        &[&["--backend", "both"][..], &args].concat(),
    ));
    let paths: Vec<_> = entries
        .iter()
        .map(|e| (e["backend"].clone(), e["path"].clone()))
        .collect();
    assert_eq!(
        paths,
        [
            ("cpu".into(), "fused".into()),
            ("gpu".into(), "fused".into())
        ],
        "{entries:?}"
    );
    assert_eq!(entries[1]["block"], 32, "{}", entries[1]);
    let entries = json_array(&bench(
        dir.path(),
        &[&["--backend", "both", "--path", "reference"][..], &args].concat(),
    ));
    for entry in &entries {
        assert_eq!(entry["path"], "reference", "{entry}");
        assert!(entry["block"].is_null(), "{entry}");
    }
}

/// `--profile`: every kernel's GPU time per step, from timestamp queries, beside the wall
/// clock; or one line saying the adapter has none. lavapipe has them.
#[test]
fn bench_profiles_the_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "--backend",
        "gpu",
        "--samples",
        "300",
        "--batch-sizes",
        "100",
        "--json",
        "--profile",
    ];
    for (path, kernels) in [
        ("fused", &["fused gradients", "fused update"][..]),
        (
            "reference",
            &["matmul", "softmax", "output_grad", "sgd_update"],
        ),
    ] {
        let out = bench(dir.path(), &[&common[..], &["--path", path]].concat());
        let entries = json_array(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("no timestamp queries") {
            assert!(entries[0]["profile"].is_null(), "{text}");
            eprintln!("not exercised: the adapter has no timestamp queries ({text})");
            continue;
        }
        assert!(
            text.contains("all kernels") && text.contains("wall clock"),
            "{text}"
        );
        let profile = &entries[0]["profile"];
        let names: Vec<&str> = profile["kernels"]
            .as_array()
            .unwrap_or_else(|| panic!("no kernels in {profile}"))
            .iter()
            .map(|k| k["kernel"].as_str().unwrap())
            .collect();
        for kernel in kernels {
            assert!(names.contains(kernel), "{path}: {kernel} not in {names:?}");
            assert!(text.contains(kernel), "{text}");
        }
        let per_step = profile["gpu_seconds_per_step"].as_f64().unwrap();
        assert!(per_step > 0.0 && per_step.is_finite(), "{profile}");
        let dispatches = profile["dispatches_per_step"].as_f64().unwrap();
        if path == "fused" {
            assert_eq!(dispatches, 2.0, "{profile}");
        } else {
            assert!(dispatches >= 15.0, "{profile}");
        }
    }
}

/// `--block` and `--max-groups` set the fused GPU step's tiling.
#[test]
fn bench_takes_a_tiling() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        dir.path(),
        &[
            "--backend",
            "gpu",
            "--samples",
            "300",
            "--batch-sizes",
            "full",
            "--block",
            "8",
            "--max-groups",
            "5",
            "--json",
        ],
    );
    let entries = json_array(&out);
    assert_eq!(
        (
            entries[0]["block"].clone(),
            entries[0]["max_groups"].clone()
        ),
        (8.into(), 5.into())
    );
    let line = one_line_error(&bench(dir.path(), &["--backend", "gpu", "--block", "12"]));
    assert!(line.contains("8, 16, 32 or 64"), "{line}");
    let line = one_line_error(&bench(
        dir.path(),
        &["--backend", "gpu", "--block", "16", "--path", "reference"],
    ));
    assert!(line.contains("--path reference"), "{line}");
    let line = one_line_error(&bench(dir.path(), &["--backend", "cpu", "--block", "16"]));
    assert!(line.contains("--backend gpu"), "{line}");
}

#[test]
fn plots_svg_and_png_and_compares_with_peers() {
    let dir = tempfile::tempdir().unwrap();
    let peer = r#"[{"backend":"numpy","adapter":"cpu","batch_size":100,"samples":300,"hidden":10,"samples_per_second":1000.0}]"#;
    std::fs::write(dir.path().join("peer.json"), format!("{peer}\n")).unwrap();
    for file in ["plot.svg", "plot.png"] {
        let out = bench(
            dir.path(),
            &[
                "--backend",
                "cpu",
                "--samples",
                "300",
                "--batch-sizes",
                "100",
                "--compare",
                "peer.json",
                "--plot",
                file,
            ],
        );
        assert_no_panic(&out);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let numpy = text
            .lines()
            .find(|l| l.starts_with("numpy"))
            .unwrap_or_else(|| panic!("no numpy row:\n{text}"));
        assert!(numpy.contains('×'), "no ratio in {numpy:?}");
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        if file.ends_with(".png") {
            assert!(bytes.starts_with(b"\x89PNG"), "{file} is not a PNG");
        } else {
            let svg = String::from_utf8_lossy(&bytes);
            assert!(svg.contains("<svg") && svg.contains("batch size"), "{svg}");
            assert!(svg.contains("numpy"), "the peer is not in the plot");
        }
    }
}

#[test]
fn bad_options_give_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cpu = ["--backend", "cpu"];
    let run = |extra: &[&str]| bench(d, &[&cpu[..], extra].concat());

    let line = one_line_error(&run(&["--samples", "0"]));
    assert!(line.contains("--samples"), "{line}");
    let line = one_line_error(&run(&["--samples", "50", "--batch-sizes", "64"]));
    assert!(line.contains("64") && line.contains("50"), "{line}");
    let line = one_line_error(&run(&[
        "--samples",
        "50",
        "--batch-sizes",
        "10",
        "--plot",
        "plot.txt",
    ]));
    assert!(line.contains(".svg"), "{line}");
    let line = one_line_error(&run(&[
        "--samples",
        "50",
        "--batch-sizes",
        "10",
        "--compare",
        "missing.json",
    ]));
    assert!(line.contains("missing.json"), "{line}");
    std::fs::write(d.join("bad.json"), "[{\"backend\": \"x\"}]\n").unwrap();
    let line = one_line_error(&run(&[
        "--samples",
        "50",
        "--batch-sizes",
        "10",
        "--compare",
        "bad.json",
    ]));
    assert!(line.contains("bad.json"), "{line}");
    let line = one_line_error(&run(&[
        "--samples",
        "50",
        "--batch-sizes",
        "10",
        "--hidden",
        "0",
    ]));
    assert!(line.contains("hidden") || line.contains("width"), "{line}");
    let line = one_line_error(&bench(
        d,
        &["--backend", "gpu", "--adapter", "no-such-adapter-xyz"],
    ));
    assert!(
        line.contains("no-such-adapter-xyz") || line.contains("driver"),
        "{line}"
    );

    one_line_error(&run(&["--batch-sizes", "0"]));
    one_line_error(&run(&["--batch-sizes", "half"]));
    one_line_error(&bench(d, &["--backend", "tpu"]));
    one_line_error(&run(&["--iterations", "5"])); // a training option
}

/// Training options and the subcommand do not mix.
#[test]
fn training_options_before_bench_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
        .args(["--backend", "cpu", "bench"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("the binary runs");
    one_line_error(&out);
}

/// `bench/gpu_table.py --quick`, the GPU table's one command at tiny sizes on this machine's
/// adapter: the adapter's description, our rows for both networks, every switch beside the
/// default row it is compared with, each peer measured or said to be absent (and why), in
/// the Markdown report, the JSON file and the summary.
#[test]
fn gpu_table_script_quick_writes_its_report_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gpu_table.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--quick", "--bin", env!("CARGO_BIN_EXE_mnist-gpu"), "--out"])
        .arg(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("WGPU_ADAPTER_NAME")
        .env_remove("MNIST_GPU_SHADER_CHECKS")
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 did not run ({e}): the GPU table's script needs it (apt-get install -y python3)")
        });
    assert!(
        out.status.success(),
        "the script failed:\n{}",
        describe(&out)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.starts_with("GPU table: "), "{summary}");

    let text = std::fs::read_to_string(dir.path().join("gpu_table.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["quick"], true);
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["skipped"], serde_json::json!([]), "{report}");
    let adapter = &report["adapter"];
    assert!(
        adapter["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{adapter}"
    );
    assert!(adapter["driver"].is_string(), "{adapter}");
    assert!(adapter["cooperative_matrices"].is_array(), "{adapter}");
    assert_eq!(adapter["shader_checks"], "off", "{adapter}");

    let rows = report["rows"].as_array().unwrap();
    let find = |item: &str, hidden: u64, batch: u64| {
        rows.iter()
            .find(|r| r["item"] == item && r["hidden"] == hidden && r["batch"] == batch)
            .unwrap_or_else(|| panic!("no row {item} 784-{hidden}-10 batch {batch}: {rows:?}"))
    };
    for hidden in [10, 96] {
        for batch in [64, 512] {
            let r = find("default", hidden, batch);
            assert!(r["samples_per_second"].as_f64().unwrap() > 0.0, "{r}");
            assert_eq!(r["shader_checks"], "off", "{r}");
            assert!(r["vs_default"].is_null(), "{r}");
        }
    }
    assert_eq!(find("default", 10, 512)["full_batch"], true);
    // Each switch beside its default: checks on, a block, the cooperative matrices.
    for (item, hidden, batch) in [
        ("shader checks on", 10, 64),
        ("--block 16", 10, 64),
        ("--block 8", 10, 64),
        ("--matmul coop", 96, 512),
        ("--matmul coop --coop-tile f16", 96, 512),
        ("--split-k 264", 96, 512),
        ("--split-k 132", 96, 512),
        ("--forward-split-k 4", 96, 512),
        ("--fused dw1-spread", 10, 512),
        ("--fused tree-sums", 10, 64),
        ("--block auto", 10, 64),
        ("--fused all --block auto", 10, 64),
    ] {
        let r = find(item, hidden, batch);
        assert!(r["vs_default"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert!(
            r["prediction"].as_str().is_some_and(|p| !p.is_empty()),
            "{r}"
        );
    }
    assert_eq!(find("shader checks on", 10, 64)["shader_checks"], "on");
    assert_eq!(find("--block 16", 10, 64)["block"], 16);

    // Training beside bench at batch 64 and full batch, on the repository's images.
    let training = report["training_vs_bench"].as_array().unwrap();
    assert_eq!(training.len(), 2, "{report}");
    for (t, batch) in training.iter().zip(["64", "full"]) {
        assert_eq!(t["batch"], batch, "{t}");
        assert!(
            t["training_vs_bench"].as_f64().is_some_and(|r| r > 0.0),
            "{t}"
        );
    }

    // Every peer measured or said to be absent, with why.
    let peers = ["pytorch eager", "pytorch cuda graph", "jax lax.scan epoch"];
    let markdown = std::fs::read_to_string(dir.path().join("gpu_table.md")).unwrap();
    for peer in peers {
        let measured = report["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["item"] == peer);
        let absent = report["peers_absent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["peer"] == peer);
        assert!(measured || absent.is_some(), "{peer}: {report}");
        if let Some(absent) = absent {
            let why = absent["why"].as_str().unwrap();
            assert!(
                markdown.contains(&format!("- {peer}: absent, {why}")),
                "{markdown}"
            );
        }
    }
    for line in [
        "# mnist-gpu GPU table (--quick",
        "## Adapter",
        "- cooperative matrices: ",
        "| 784-96-10 | default | full 512 |",
        "| 784-10-10 | shader checks on | 64 |",
        "## Training beside bench (784-10-10, 10,000 images)",
        "## Peers on the same machine",
    ] {
        assert!(markdown.contains(line), "no {line:?} in:\n{markdown}");
    }
}

/// `MNIST_GPU_SHADER_CHECKS`: 1 turns wgpu's shader runtime checks on, as the header and each
/// entry say (off by default); any other value than 0 or 1 is one line naming the variable.
/// `--adapter-info` prints the adapter as one JSON object; `--coop-tile` is named in the
/// entries where cooperative tiles ran, and where none can, the plain kernels run.
#[test]
fn bench_says_its_shader_checks_and_coop_tile() {
    let dir = tempfile::tempdir().unwrap();
    let run = |checks: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mnist-gpu"))
            .arg("bench")
            .args([
                "--backend",
                "gpu",
                "--samples",
                "200",
                "--batch-sizes",
                "100",
            ])
            .args(extra)
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("WGPU_ADAPTER_NAME")
            .env("MNIST_GPU_SHADER_CHECKS", checks)
            .output()
            .expect("the binary runs")
    };
    for (value, want) in [("", "off"), ("0", "off"), ("1", "on")] {
        let out = run(value, &["--json"]);
        let entries = json_array(&out);
        assert_eq!(entries[0]["shader_checks"], want, "{value:?}: {entries:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(
                "shader runtime checks {want} (MNIST_GPU_SHADER_CHECKS=1 turns them on)"
            )),
            "{text}"
        );
    }
    let line = one_line_error(&run("yes", &["--json"]));
    assert!(line.contains("MNIST_GPU_SHADER_CHECKS=\"yes\""), "{line}");

    let out = run("", &["--adapter-info"]);
    assert!(out.status.success(), "{}", describe(&out));
    let info: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(
        info["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{info}"
    );
    assert!(info["cooperative_matrices"].is_array(), "{info}");
    assert_eq!(info["shader_checks"], "off", "{info}");

    let out = run(
        "",
        &[
            "--matmul",
            "coop",
            "--coop-tile",
            "f16",
            "--hidden",
            "130",
            "--json",
        ],
    );
    let entry = &json_array(&out)[0];
    match entry["matmul"].as_str() {
        Some("coop") => assert!(
            entry["coop_tile"].as_str().is_some_and(|t| t.contains("×")),
            "{entry}"
        ),
        _ => {
            assert_eq!(entry["matmul"], "plain", "{entry}");
            assert!(entry["coop_tile"].is_null(), "{entry}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("note: --matmul coop:"), "{err}");
        }
    }
}

//! The command line's small edges (issue 21): a misspelt or borrowed name gets what was meant,
//! the exit status says whose mistake it was, GPU options on the CPU are not ignored silently,
//! `-h` and `--help` agree, and the release binary is one to copy.

use std::path::Path;
use std::process::Output;

use crate::common;
use crate::common::output::{assert_one_line_error, assert_success, describe, run_in, stdout};

/// 300 labelled random images as `t.csv` in a temporary directory.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = common::random_dataset(300, 1);
    mnist_gpu::data::write_csv(&data, &dir.path().join("t.csv"), true).unwrap();
    dir
}

/// A one-iteration CPU run on `t.csv`, then `extra`.
fn run_small(dir: &Path, extra: &[&str]) -> Output {
    let common = ["--train", "t.csv", "--test", "none", "--dev-size", "50"];
    let args = [&common[..], &["--iterations", "1"], extra].concat();
    run_in(dir, &args)
}

/// One line, exit status 2, and the line says what was meant.
#[test]
fn unknown_names_say_what_was_meant() {
    let dir = fixture();
    for (args, meant) in [
        (&["--epoch", "3"][..], "did you mean --epochs?"),
        (&["--batchsize", "64"], "did you mean --batch-size?"),
        (&["--lr", "0.1"], "the learning rate is --alpha"),
        (&["--lr=0.1"], "the learning rate is --alpha"),
        (&["--learning-rate", "0.1"], "the learning rate is --alpha"),
        (
            &["train", "--epochs", "3"],
            "training is the default command",
        ),
        (
            &["evaluate", "--model", "m.safetensors"],
            "did you mean `eval`?",
        ),
        (
            &["predict", "--modl", "m.safetensors"],
            "did you mean --model?",
        ),
        (
            &["export", "--modl", "m.safetensors", "--onnx", "m.onnx"],
            "did you mean --model?",
        ),
        (
            &["exprot", "--model", "m.safetensors"],
            "did you mean export?",
        ),
        (
            &["convert", "--model", "m.safetensors"],
            "did you mean `export`?",
        ),
    ] {
        let out = run_in(dir.path(), args);
        let line = assert_one_line_error(&out);
        assert!(line.contains(meant), "{args:?}: {line}");
        assert!(line.ends_with("(see --help)"), "{args:?}: {line}");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    // Nothing alike: no guess.
    let line = assert_one_line_error(&run_in(dir.path(), &["--zzz"]));
    assert!(!line.contains("did you mean"), "{line}");
}

/// 2 for a command line that cannot run as given, whether clap or the trainer finds it; 1
/// for what went wrong with the run: a file, its data.
#[test]
fn exit_status_2_for_the_command_line_1_for_the_run() {
    let dir = fixture();
    std::fs::write(dir.path().join("bad.csv"), "label,pixel0\n1,2,3\n").unwrap();
    let cases: [(&[&str], i32); 7] = [
        (&["--backend", "tpu"], 2),
        (&["--batch-size", "10", "--iterations", "5"], 2),
        (&["--batch-size", "0"], 2),
        (&["--alpha=0"], 2),
        (&["--hidden", "0"], 2),
        (&["--show", "51"], 2),
        (&["--metrics", "no-such-dir/m.csv"], 2),
    ];
    for (args, status) in cases {
        let out = run_small(dir.path(), &[args, &["--backend", "cpu"]].concat());
        assert_one_line_error(&out);
        assert_eq!(
            out.status.code(),
            Some(status),
            "{args:?}: {}",
            describe(&out)
        );
    }
    for file in ["missing.csv", "bad.csv"] {
        let out = run_in(dir.path(), &["--train", file, "--backend", "cpu"]);
        assert_one_line_error(&out);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", describe(&out));
    }
    // `export`: its command line (clap's and ours), then a model file that is none.
    let export: [(&[&str], i32); 4] = [
        (&["--model", "bad.csv"], 2),
        (&["--model", "bad.csv", "--onnx", "m.txt"], 2),
        (&["--model", "bad.csv", "--onnx", "no-such-dir/m.onnx"], 2),
        (&["--model", "bad.csv", "--onnx", "m.onnx"], 1),
    ];
    for (args, status) in export {
        let out = run_in(dir.path(), &[&["export"][..], args].concat());
        assert_one_line_error(&out);
        assert_eq!(
            out.status.code(),
            Some(status),
            "export {args:?}: {}",
            describe(&out)
        );
    }
}

/// `--adapter` and `--matmul coop` choose what runs on a GPU: on the CPU one line says they
/// are not used, and the run goes on.
#[test]
fn gpu_options_on_the_cpu_are_noted() {
    let dir = fixture();
    let note = |out: &Output| {
        assert_success(out);
        let text = stdout(out);
        let notes: Vec<String> = text
            .lines()
            .filter(|l| l.contains("for a GPU and not used"))
            .map(str::to_string)
            .collect();
        assert!(notes.len() <= 1, "{}", describe(out));
        notes.into_iter().next()
    };
    let cpu = ["--backend", "cpu"];
    let line = note(&run_small(
        dir.path(),
        &[&cpu[..], &["--adapter", "nvidia"]].concat(),
    ));
    let line = line.expect("a note for --adapter");
    assert!(line.starts_with("note: --adapter nvidia is"), "{line}");
    let line = note(&run_small(
        dir.path(),
        &[&cpu[..], &["--matmul", "coop"]].concat(),
    ));
    assert!(line.expect("a note").contains("--matmul coop"));
    let both = [&cpu[..], &["--matmul", "coop", "--adapter", "x"]].concat();
    let line = note(&run_small(dir.path(), &both)).expect("a note");
    assert!(line.contains("--adapter x and --matmul coop are"), "{line}");
    assert_eq!(note(&run_small(dir.path(), &cpu)), None);
    assert_eq!(
        note(&run_small(
            dir.path(),
            &[&cpu[..], &["--matmul", "plain"]].concat()
        )),
        None
    );
}

/// `-h` is the first paragraph of `--help`: the same sentence.
#[test]
fn short_and_long_help_open_alike() {
    let dir = fixture();
    let first = |flag: &str| {
        let out = run_in(dir.path(), &[flag]);
        assert_success(&out);
        let text = stdout(&out);
        let line = text.lines().next().unwrap_or_default().to_string();
        line.trim_end_matches('.').to_string()
    };
    let (short, long) = (first("-h"), first("--help"));
    assert!(
        short.starts_with("Trains the classic MNIST network"),
        "{short}"
    );
    assert_eq!(short, long);
    // Every subcommand has its own help, which names its options.
    for (command, option) in [
        ("predict", "--data"),
        ("eval", "--json"),
        ("export", "--onnx"),
        ("bench", "--backend"),
        ("serve", "--port"),
    ] {
        let out = run_in(dir.path(), &[command, "--help"]);
        assert_success(&out);
        assert!(
            stdout(&out).contains(option),
            "{command} --help: {}",
            describe(&out)
        );
    }
    let help = stdout(&run_in(dir.path(), &["--help"]));
    assert!(
        help.contains("export"),
        "--help lists the subcommands: {help}"
    );
}

/// The release binary carries no debug info (it is the one the README says to copy); the
/// profiling profile has it, and the README says how big the release binary is.
#[test]
fn the_release_binary_ships_without_debug_info() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let section = |name: &str| -> String {
        let start = manifest
            .find(&format!("[profile.{name}]"))
            .unwrap_or_else(|| {
                panic!("Cargo.toml has no [profile.{name}]");
            });
        let rest = &manifest[start + 1..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
    };
    let release = section("release");
    assert!(release.contains("debug = false"), "{release}");
    let profiling = section("profiling");
    assert!(profiling.contains("inherits = \"release\""), "{profiling}");
    assert!(profiling.contains("debug ="), "{profiling}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("--profile profiling"),
        "the README names the profiling profile"
    );
}

/// An option refused is refused before the run seems to start: no header on stdout.
#[test]
fn refused_options_print_nothing_first() {
    let dir = fixture();
    for args in [
        &["--patience", "2", "--dev-size", "0"][..],
        &["--alpha=0"],
        &["--show", "51"],
    ] {
        let out = run_in(
            dir.path(),
            &[
                &["--train", "t.csv", "--backend", "cpu", "--iterations", "1"][..],
                args,
            ]
            .concat(),
        );
        assert_one_line_error(&out);
        assert_eq!(stdout(&out), "", "{args:?}: {}", describe(&out));
    }
}

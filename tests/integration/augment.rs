//! `--augment affine|elastic`: the warp's CPU twin against an f64 reference of the math (the
//! identity, quarter turns, a whole-pixel translation equal to today's shift, random warps),
//! the GPU kernel against both at awkward batch sizes, training on both backends alike, and
//! runs that repeat bit for bit and resume exactly through the binary.

use std::path::Path;
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::common::output::{assert_one_line_error, assert_success, json_summary, run_in};
use crate::common::{self, assert_models_close, random_bytes};
use mnist_gpu::augment::{Affine, Augment, Distortion, Warps};
use mnist_gpu::backend::{Backend, StepPath};
use mnist_gpu::cpu::{ops, CpuBackend};
use mnist_gpu::data::pool::Shift;
use mnist_gpu::data::{IMAGE_SIDE, PIXELS};
use mnist_gpu::gpu::copies::WarpBuffer;
use mnist_gpu::gpu::kernels::{Recorder, Uniforms};
use mnist_gpu::gpu::native::Workbench;
use mnist_gpu::gpu::{GpuBackend, GpuContext};
use mnist_gpu::model::{Activation, Init, Model};
use mnist_gpu::optimizer::{Optimizer, OptimizerKind};

/// The warp of image `source` by `warp` (and field `d`, (2, 784)) in f64: output pixel (r, c)
/// is the bilinear sample at A·(r − 13.5, c − 13.5) + 13.5 + t + d(r, c), 0 outside; the
/// values before rounding.
fn warp_f64(source: &[u8], warp: &Affine, d: Option<&[f32]>) -> Vec<f64> {
    let side = IMAGE_SIDE as i64;
    let at = |r: i64, c: i64| -> f64 {
        if (0..side).contains(&r) && (0..side).contains(&c) {
            source[(r * side + c) as usize] as f64
        } else {
            0.0
        }
    };
    let (a, t) = (warp.a.map(f64::from), warp.t.map(f64::from));
    (0..PIXELS)
        .map(|p| {
            let (u, v) = (
                (p / IMAGE_SIDE) as f64 - 13.5,
                (p % IMAGE_SIDE) as f64 - 13.5,
            );
            let (dy, dx) = d.map_or((0.0, 0.0), |d| (d[p] as f64, d[PIXELS + p] as f64));
            let y = a[0] * u + a[1] * v + 13.5 + t[0] + dy;
            let x = a[2] * u + a[3] * v + 13.5 + t[1] + dx;
            let (r, c) = (y.floor() as i64, x.floor() as i64);
            let (wy, wx) = (y - y.floor(), x - x.floor());
            (1.0 - wy) * ((1.0 - wx) * at(r, c) + wx * at(r, c + 1))
                + wy * ((1.0 - wx) * at(r + 1, c) + wx * at(r + 1, c + 1))
        })
        .collect()
}

/// Bytes against the f64 values: ⌊v + ½⌋ exactly, or one off where v lies within 10⁻³ of a
/// half (f32 coordinates may round either way there). Names the first wrong byte.
fn assert_rounds(what: &str, got: &[u8], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let exact = (w + 0.5).floor().clamp(0.0, 255.0);
        let near_half = ((w - w.floor()) - 0.5).abs() < 1e-3;
        let ok = g as f64 == exact || (near_half && (g as f64 - exact).abs() <= 1.0);
        assert!(
            ok,
            "{what}: byte {i} (image {}, pixel {}) is {g} but the reference is {w:.4} → {exact}",
            i / PIXELS,
            i % PIXELS
        );
    }
}

/// Warps of the strengths for `m` images, elastic or not, keyed by `key`.
fn random_warps(m: usize, elastic: bool, key: u64) -> Warps {
    let d = Distortion::default();
    let augment = if elastic {
        Augment::Elastic(d)
    } else {
        Augment::Affine(d)
    };
    let mut warps = Warps::new(&augment).unwrap();
    warps.for_batch(key, m);
    warps
}

/// Image j of the pool `images` per `indices` warped in f64, by the affine maps and fields
/// the CPU draws from the warps' key.
fn reference(images: &[u8], indices: &[u32], warps: &Warps) -> Vec<f64> {
    let (mut noise, mut field) = (vec![0.0; 2 * PIXELS], vec![0.0; 2 * PIXELS]);
    let mut want = Vec::new();
    for (j, &image) in indices.iter().enumerate() {
        let source = &images[image as usize * PIXELS..][..PIXELS];
        let d = warps.elastic().then(|| {
            warps.field_of(j, &mut noise, &mut field);
            &field[..]
        });
        want.extend(warp_f64(source, &warps.affine_of(j), d));
    }
    want
}

/// `ops::warp_image` on each listed image with the affine maps given.
fn warp_each(images: &[u8], indices: &[u32], affine: &[Affine], out: &mut [u8]) {
    for ((warped, &image), a) in out.chunks_exact_mut(PIXELS).zip(indices).zip(affine) {
        let source = &images[image as usize * PIXELS..][..PIXELS];
        ops::warp_image(source, a, None, warped);
    }
}

#[test]
fn the_warp_twin_is_the_math() {
    let images = random_bytes(5 * PIXELS, 90);
    let indices = [3u32, 0, 4];
    let side = IMAGE_SIDE;
    let mut out = vec![0xAAu8; 3 * PIXELS];

    // The identity copies the images.
    warp_each(&images, &indices, &[Affine::IDENTITY; 3], &mut out);
    for (j, &image) in indices.iter().enumerate() {
        let source = &images[image as usize * PIXELS..][..PIXELS];
        assert!(
            out[j * PIXELS..][..PIXELS] == *source,
            "identity: image {j}"
        );
    }

    // A quarter turn: A = [[0, −1], [1, 0]] samples (27 − c, r); a half turn (27 − r, 27 − c).
    let quarter = Affine {
        a: [0.0, -1.0, 1.0, 0.0],
        t: [0.0, 0.0],
    };
    let half = Affine {
        a: [-1.0, 0.0, 0.0, -1.0],
        t: [0.0, 0.0],
    };
    warp_each(&images, &indices, &[quarter, half, quarter], &mut out);
    for (j, &image) in indices.iter().enumerate() {
        let source = &images[image as usize * PIXELS..][..PIXELS];
        for p in 0..PIXELS {
            let (r, c) = (p / side, p % side);
            let want = match j {
                1 => source[(side - 1 - r) * side + (side - 1 - c)],
                _ => source[(side - 1 - c) * side + r],
            };
            assert_eq!(
                out[j * PIXELS + p],
                want,
                "turn: image {j}, pixel ({r}, {c})"
            );
        }
    }

    // A whole-pixel translation t = (−dy, −dx) is today's shift.
    let shifts = [
        Shift { dx: 2, dy: -1 },
        Shift { dx: -2, dy: 2 },
        Shift { dx: 0, dy: 1 },
    ];
    let translations: Vec<Affine> = shifts
        .iter()
        .map(|s| Affine {
            t: [-s.dy as f32, -s.dx as f32],
            ..Affine::IDENTITY
        })
        .collect();
    let mut shifted = vec![0u8; 3 * PIXELS];
    ops::augment(&images, &indices, &shifts, &mut shifted);
    warp_each(&images, &indices, &translations, &mut out);
    assert!(
        out == shifted,
        "a whole-pixel translation differs from the shift"
    );

    // Random affine and elastic warps: the f64 sampling, rounded; ops::warp (in parallel,
    // by chunks of images) is warp_image on each image's own draws.
    let many: Vec<u32> = (0..37).map(|i| i % 5).collect();
    for elastic in [false, true] {
        let warps = random_warps(37, elastic, 91);
        let mut out = vec![0xAAu8; 37 * PIXELS];
        ops::warp(&images, &many, &warps, &mut out);
        let what = format!("twin, elastic {elastic}");
        assert_rounds(&what, &out, &reference(&images, &many, &warps));
    }
}

/// The GPU's warp.wgsl, fed through `WarpBuffer` as the engines feed it (the key and strengths,
/// nothing per image), on the warps' images listed from position `offset`; the output starts
/// poisoned.
fn gpu_warp(
    ctx: &std::sync::Arc<GpuContext>,
    images: &[u8],
    indices: &[u32],
    offset: usize,
    warps: &Warps,
) -> Vec<u8> {
    let m = warps.len;
    let mut w = Workbench::new(ctx.clone());
    let image_buffer = w.upload("images", images);
    let index_buffer = w.upload("indices", bytemuck::cast_slice(indices));
    let mut warp_buffer = WarpBuffer::new(&mut w.tape, 1).unwrap();
    assert_eq!(warp_buffer.write(&mut w.tape, 0, warps), 0);
    let out = w.upload("out", &vec![0xAAu8; m * PIXELS]);
    let (k, tape) = (&w.kernels, &mut w.tape);
    let mut u = Uniforms::new(tape, 1).unwrap();
    let buffers = [image_buffer, index_buffer, warp_buffer.warps, out];
    let bound = k.warp.bind(tape, &mut u, &buffers);
    let mut rec = Recorder::new(tape, &mut u);
    k.warp(&mut rec, &bound, m, offset as u32);
    rec.submit();
    w.read_bytes(out, (m * PIXELS) as u64)
}

#[test]
fn the_warp_kernel_matches_its_twin_and_the_math() {
    let ctx = std::sync::Arc::new(common::gpu());
    // Bytes where the GPU and the twin differ, over every case: the GPU computes each image's
    // map itself, and a driver may round a product differently (fusing it, or not, into an
    // add), which moves a byte across a rounding edge now and then.
    let (mut differ, mut bytes) = (0, 0);
    for (m, seed) in [(1, 92), (7, 93), (65, 94)] {
        let count = m + 3;
        let images = random_bytes(count * PIXELS, seed);
        let indices: Vec<u32> = (0..count as u32).rev().collect();
        let offset = 2;
        let batch = &indices[offset..offset + m];
        for elastic in [false, true] {
            let warps = random_warps(m, elastic, (seed as u64) << 32 | 100);
            let what = format!("warp x{m}, elastic {elastic}");
            let want = reference(&images, batch, &warps);
            let got = gpu_warp(&ctx, &images, &indices, offset, &warps);
            assert_rounds(&format!("{what}: GPU"), &got, &want);
            let mut cpu = vec![0u8; m * PIXELS];
            ops::warp(&images, batch, &warps, &mut cpu);
            assert_rounds(&format!("{what}: CPU twin"), &cpu, &want);
            differ += got.iter().zip(&cpu).filter(|(g, c)| g != c).count();
            bytes += got.len();
        }
    }
    assert!(
        differ * 1000 <= bytes,
        "the GPU and the twin differ in {differ} of {bytes} bytes"
    );
}

/// The training loop with affine and elastic warps on the CPU and both GPU paths: the same
/// seeded warps, so the same batch losses (within the parity tolerances of parity.rs) and the
/// same final parameters; the warps matter (without them the run ends elsewhere).
#[test]
fn warped_training_matches_on_both_backends() {
    use mnist_gpu::train::{self, Schedule};
    let ctx = Arc::new(common::gpu());
    let split = common::small_split();
    let model = Model::new(&[20], Activation::Relu, Init::He, 4).unwrap();
    for augment in [
        Augment::Affine(Distortion::default()),
        Augment::Elastic(Distortion::default()),
    ] {
        let schedule = Schedule {
            batch_size: Some(100),
            epochs: 2,
            alpha: 0.05,
            optimizer: Optimizer::with_defaults(OptimizerKind::Momentum),
            augment,
            log_every: 1,
            ..Schedule::default()
        };
        let capacity = schedule.capacity(split.train.len());
        let mut cpu = CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap();
        let c = train::train(&mut cpu, &split, &schedule, &mut |_| {}).unwrap();
        for path in [StepPath::Fused, StepPath::Reference] {
            let what = format!("{} on the GPU's {} path", augment.name(), path.name());
            let sizes = split.sizes();
            let mut gpu = GpuBackend::with_path(
                ctx.clone(),
                &model,
                &split.pool,
                sizes,
                capacity,
                Some(path),
            )
            .unwrap();
            assert_eq!(gpu.path(), path);
            let g = train::train(&mut gpu, &split, &schedule, &mut |_| {}).unwrap();
            assert_eq!(c.history.len(), 24);
            for (pc, pg) in c.history.iter().zip(&g.history) {
                let (lc, lg) = (pc.batch.loss, pg.batch.loss);
                assert!(
                    (lc - lg).abs() <= 1e-4 + 1e-3 * lc.abs(),
                    "{what}: step {}: batch loss GPU {lg} vs CPU {lc}",
                    pc.step
                );
            }
            let (gm, cm) = (gpu.model().unwrap(), cpu.model().unwrap());
            assert_models_close(&what, &gm, &cm, 1e-4, 1e-3);
        }
        let plain = Schedule {
            augment: Augment::Off,
            ..schedule.clone()
        };
        let mut unwarped =
            CpuBackend::new(&model, split.pool.clone(), split.sizes(), capacity).unwrap();
        train::train(&mut unwarped, &split, &plain, &mut |_| {}).unwrap();
        assert!(unwarped.model().unwrap() != cpu.model().unwrap());
    }
}

const RUN: [&str; 14] = [
    "--backend",
    "cpu",
    "--train",
    "train.csv",
    "--test",
    "none",
    "--dev-size",
    "40",
    "--batch-size",
    "20",
    "--optimizer",
    "adam",
    "--alpha",
    "0.002",
];

fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    run_in(dir, &[&RUN[..], extra].concat())
}

/// With each warp, a run repeats bit for bit, and a run stopped at a checkpoint and resumed
/// ends with the same model as the run never stopped; the checkpoint's kind and strengths
/// define the run.
#[test]
fn warped_runs_repeat_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mnist_gpu::data::write_csv(&common::random_dataset(300, 1), &d.join("train.csv"), true)
        .unwrap();
    let read = |name: &str| mnist_gpu::model_file::load(&d.join(name)).unwrap().model;
    for kind in ["affine", "elastic"] {
        let whole = ["--epochs", "3", "--augment", kind, "--rotation", "0.3"];
        for name in ["a.safetensors", "b.safetensors"] {
            assert_success(&train(d, &[&whole[..], &["--save", name]].concat()));
        }
        assert!(
            read("a.safetensors") == read("b.safetensors"),
            "{kind}: two runs differ"
        );
        let part = ["--epochs", "2", "--augment", kind, "--rotation", "0.3"];
        let c = ["--checkpoint", "c.safetensors"];
        assert_success(&train(d, &[&part[..], &c].concat()));
        let resume = ["--resume", "c.safetensors", "--epochs", "3"];
        let out = train(
            d,
            &[&resume[..], &["--save", "r.safetensors", "--json"]].concat(),
        );
        assert_success(&out);
        let v = json_summary(&out);
        assert_eq!(v["augment"]["kind"], kind, "{v}");
        assert_eq!(v["augment"]["rotation"], 0.3, "{v}");
        assert!(
            read("r.safetensors") == read("a.safetensors"),
            "{kind}: the resumed run ended elsewhere"
        );
        // Another warp, or another strength, is another run.
        let other = if kind == "affine" {
            "elastic"
        } else {
            "affine"
        };
        let message =
            assert_one_line_error(&train(d, &[&resume[..], &["--augment", other]].concat()));
        assert!(
            message.contains(&format!("--augment {kind}, this run asks for {other}")),
            "{message}"
        );
        let message =
            assert_one_line_error(&train(d, &[&resume[..], &["--rotation", "0.1"]].concat()));
        assert!(
            message.contains("--rotation 0.3, this run asks for 0.1"),
            "{message}"
        );
        std::fs::remove_file(d.join("c.safetensors")).unwrap();
    }
    // A strength without its warp is refused, naming both.
    for (flag, kind, needs) in [
        ("--rotation", "shift", "--augment affine or elastic"),
        ("--elastic-sigma", "affine", "--augment elastic"),
    ] {
        let out = train(d, &["--epochs", "1", "--augment", kind, flag, "2"]);
        let message = assert_one_line_error(&out);
        assert!(
            message.contains(&format!("{flag} needs {needs}")),
            "{message}"
        );
    }
    // Strengths that cannot work are refused in one line naming the option.
    for (flag, value) in [
        ("--scale", "1.5"),
        ("--elastic-sigma", "0"),
        ("--shear", "nan"),
        ("--rotation", "3.2"),
    ] {
        let out = train(d, &["--epochs", "1", "--augment", "elastic", flag, value]);
        let message = assert_one_line_error(&out);
        assert!(message.contains(flag), "{message}");
    }
}

/// A warped run's checkpoint written before warps were drawn from keys (its state has no
/// `warps`) is refused in one line saying why and what to do; an unwarped one of the same age
/// still resumes.
#[test]
fn a_warped_checkpoint_from_before_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mnist_gpu::data::write_csv(&common::random_dataset(200, 2), &d.join("train.csv"), true)
        .unwrap();
    // The checkpoint as the earlier build wrote it: the same file without the `warps` key.
    let unkeyed = |name: &str| {
        let path = d.join(name);
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let text = header["__metadata__"]["checkpoint"].as_str().unwrap();
        let mut run: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(run["warps"], "keyed", "{run}");
        run.as_object_mut().unwrap().remove("warps");
        header["__metadata__"]["checkpoint"] = run.to_string().into();
        let mut text = header.to_string().into_bytes();
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend(text);
        out.extend(&bytes[8 + n..]);
        std::fs::write(&path, out).unwrap();
    };
    for (augment, refused) in [("elastic", true), ("shift", false)] {
        let c = [
            "--checkpoint",
            "c.safetensors",
            "--epochs",
            "1",
            "--augment",
            augment,
        ];
        assert_success(&train(d, &c));
        unkeyed("c.safetensors");
        let out = train(d, &["--resume", "c.safetensors", "--epochs", "2"]);
        if refused {
            let message = assert_one_line_error(&out);
            assert!(
                message.contains("before warps were drawn from keys")
                    && message.contains("start the run again"),
                "{message}"
            );
        } else {
            assert_success(&out);
        }
        std::fs::remove_file(d.join("c.safetensors")).unwrap();
    }
}

/// Many warped steps recorded before one read (the fused GPU path puts each step's record in a
/// region of its own), kinds mixed: affine, then elastic, shift, affine again; the GPU's
/// parameters end where the CPU's do.
#[test]
fn warped_steps_without_reads_between_match_the_cpu() {
    use mnist_gpu::data::pool::{draw_shifts, List};
    let ctx = Arc::new(common::gpu());
    let split = common::small_split();
    let model = Model::new(&[20], Activation::Relu, Init::He, 5).unwrap();
    let capacity = 100;
    let sizes = split.sizes();
    for path in [StepPath::Fused, StepPath::Reference] {
        let mut cpu = CpuBackend::new(&model, split.pool.clone(), sizes, capacity).unwrap();
        let mut gpu = GpuBackend::with_path(
            ctx.clone(),
            &model,
            &split.pool,
            sizes,
            capacity,
            Some(path),
        )
        .unwrap();
        let backends: [&mut dyn Backend; 2] = [&mut cpu, &mut gpu];
        for backend in backends {
            backend.set_list(List::Train, &split.train).unwrap();
            let mut rng = ChaCha12Rng::seed_from_u64(8);
            let mut shifts = Vec::new();
            let d = Distortion::default();
            let kinds = [Augment::Affine(d); 3]
                .into_iter()
                .chain([Augment::Elastic(d); 5])
                .chain([Augment::Shift; 2])
                .chain([Augment::Affine(d); 2]);
            for (step, augment) in kinds.enumerate() {
                let (start, len) = ((step * 97) % 1100, 100 - step);
                if augment == Augment::Shift {
                    draw_shifts(&mut rng, len, &mut shifts);
                    backend
                        .train_step_shifted(start, len, 0.1, &shifts)
                        .unwrap();
                } else {
                    let mut warps = Warps::new(&augment).unwrap();
                    warps.for_batch(rng.next_u64(), len);
                    backend.train_step_warped(start, len, 0.1, &warps).unwrap();
                }
            }
        }
        let what = format!("12 mixed steps on the GPU's {} path", path.name());
        let (gm, cm) = (gpu.model().unwrap(), cpu.model().unwrap());
        assert_models_close(&what, &gm, &cm, 1e-4, 1e-3);
        assert!(cm != model, "{what}: the CPU did not train");
    }
}

/// `bench --augment KIND` times steps with the augmentation on, on each backend, and says so.
#[test]
fn bench_times_steps_with_each_augmentation() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["shift", "affine", "elastic"] {
        for backend in ["cpu", "gpu"] {
            let args = [
                "bench",
                "--backend",
                backend,
                "--samples",
                "256",
                "--batch-sizes",
                "64",
                "--augment",
                kind,
                "--json",
            ];
            let out = run_in(dir.path(), &args);
            assert_success(&out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let note = format!("every timed step draws and applies --augment {kind}");
            assert!(stderr.contains(&note), "{backend} {kind}: {stderr}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let entries: serde_json::Value =
                serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
            let rate = entries[0]["samples_per_second"].as_f64().unwrap();
            assert!(rate > 0.0, "{backend} {kind}: {entries}");
        }
    }
}

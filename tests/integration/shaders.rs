//! Every WGSL kernel parses and validates with naga (no GPU needed), and every kernel obeys the
//! project's "one name in three places" rule: `shaders/<name>.wgsl`, the CPU twin
//! `cpu::ops::<name>` and the GPU wrapper `gpu::kernels::Kernels::<name>`. The fused step's
//! kernels (shaders/fused.wgsl, entry points named like the steps they take) are the twins of
//! `cpu/fused.rs`, built in `gpu/fused.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mnist_gpu::gpu::shaders::{Code, ACTIVATION_CODES, OPTIMIZER_CODES, SHADERS};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The stems of the `*.wgsl` files in `shaders/`.
fn shader_files() -> BTreeSet<String> {
    let dir = root().join("shaders");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wgsl"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The compute entry points a shader must have.
fn entry_points(name: &str) -> &'static [&'static str] {
    match name {
        "fused" => &FUSED_KERNELS,
        "matmul" => &["main", "tiled"],
        _ => &["main"],
    }
}

const FUSED_KERNELS: [&str; 3] = ["gradients", "logits", "update"];

#[test]
fn every_shader_parses_and_validates() {
    let mut failures = Vec::new();
    // matmul_coop is validated as the modules it is compiled into (below).
    for (name, source) in SHADERS.iter().filter(|(name, _)| *name != "matmul_coop") {
        let module = match naga::front::wgsl::parse_str(source) {
            Ok(module) => module,
            Err(e) => {
                failures.push(format!(
                    "{name}.wgsl does not parse:\n{}",
                    e.emit_to_string(source)
                ));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}.wgsl does not validate:\n{}",
                e.emit_to_string(source)
            ));
            continue;
        }
        // The wrappers build every pipeline with entry point "main" (matmul's wide products
        // with "tiled" too); the fused step's with the names of its kernels.
        for entry in entry_points(name) {
            if !module
                .entry_points
                .iter()
                .any(|ep| ep.name == *entry && ep.stage == naga::ShaderStage::Compute)
            {
                failures.push(format!(
                    "{name}.wgsl has no compute entry point named {entry}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// matmul's cooperative-matrix kernel, fitted every way an adapter can ask for: tiles of 8
/// or 16, f16 or f32 inputs, subgroups of 8 (lavapipe) or 32.
#[test]
fn the_cooperative_matmul_validates_in_every_fit() {
    use mnist_gpu::gpu::coop::CoopConfig;
    let mut failures = Vec::new();
    for size in [8, 16] {
        for f16_inputs in [false, true] {
            for lanes in [8, 32] {
                let config = CoopConfig {
                    size,
                    f16_inputs,
                    lanes,
                };
                let source = config.source();
                let what = format!("matmul_coop.wgsl fitted as {config:?}");
                let module = match naga::front::wgsl::parse_str(&source) {
                    Ok(module) => module,
                    Err(e) => {
                        failures.push(format!("{what}: {}", e.emit_to_string(&source)));
                        continue;
                    }
                };
                let capabilities = naga::valid::Capabilities::COOPERATIVE_MATRIX
                    | naga::valid::Capabilities::SHADER_FLOAT16;
                let mut validator =
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities);
                if let Err(e) = validator.validate(&module) {
                    failures.push(format!("{what}: {}", e.emit_to_string(&source)));
                }
                let names: Vec<&str> = module
                    .entry_points
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect();
                if names != ["main", "tiled", "coop"] {
                    failures.push(format!("{what}: entry points {names:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The activation and optimizer codes reach WGSL by name: each shader that tells them apart
/// declares an override per code, whose default (for a shader compiled on its own) is the
/// code's value on the Rust side (`gpu::shaders`), and compares against the names, not numbers.
#[test]
fn codes_are_defined_once_and_named_in_wgsl() {
    let codes: Vec<Code> = ACTIVATION_CODES
        .into_iter()
        .chain(OPTIMIZER_CODES)
        .collect();
    let users: [(&str, &[Code]); 3] = [
        ("activation", &ACTIVATION_CODES),
        ("activation_grad", &ACTIVATION_CODES),
        ("fused", &codes),
    ];
    let mut failures = Vec::new();
    for (name, source) in SHADERS.iter().filter(|(name, _)| *name != "matmul_coop") {
        let module = naga::front::wgsl::parse_str(source).expect("parses (tested above)");
        let default = |code: &Code| {
            let o = module
                .overrides
                .iter()
                .find(|(_, o)| o.name.as_deref() == Some(code.name));
            o.map(|(_, o)| o.init.map(|init| module.global_expressions[init].clone()))
        };
        let wanted = users
            .iter()
            .find(|(user, _)| user == name)
            .map_or(&[][..], |u| u.1);
        for code in &codes {
            let literal = naga::Expression::Literal(naga::Literal::U32(code.value));
            match default(code) {
                None if wanted.contains(code) => {
                    failures.push(format!("{name}.wgsl declares no override {}", code.name))
                }
                None => {}
                Some(init) if init != Some(literal.clone()) => failures.push(format!(
                    "{name}.wgsl: override {}'s default is {init:?}, not {}u",
                    code.name, code.value
                )),
                Some(_) => {}
            }
        }
        // A comparison against a code names it.
        for compared in ["act == ", "ACT == ", "optimizer == "] {
            for (at, _) in source.match_indices(compared) {
                let next = source[at + compared.len()..].chars().next();
                if next.is_some_and(|c| c.is_ascii_digit()) {
                    failures.push(format!("{name}.wgsl compares `{compared}` with a number"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shaders_match_the_files_on_disk() {
    // SHADERS embeds the files with include_str!, so each listed source must equal its file.
    for (name, source) in SHADERS {
        let path = root().join("shaders").join(format!("{name}.wgsl"));
        assert!(
            path.is_file(),
            "SHADERS lists {name}, but {} does not exist",
            path.display()
        );
        assert_eq!(
            read(&path),
            *source,
            "SHADERS' {name} is not the text of {}",
            path.display()
        );
    }
    let listed: BTreeSet<String> = SHADERS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(listed.len(), SHADERS.len(), "SHADERS lists a name twice");
    let on_disk = shader_files();
    assert!(!on_disk.is_empty(), "no .wgsl files found in shaders/");
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "shaders/ files not listed in SHADERS: {unlisted:?}"
    );
}

#[test]
fn one_name_in_three_places() {
    let ops = read(&root().join("src/cpu/ops.rs"));
    let kernels = read(&root().join("src/gpu/kernels.rs"));
    let mut missing = Vec::new();
    // The fused step: each kernel is built by name in gpu/fused.rs and has a CPU twin of its
    // name in cpu/ (the fast path's `gradients` and `logits`, the backend's `update`).
    let gpu_fused = read(&root().join("src/gpu/fused.rs"));
    let cpu = read(&root().join("src/cpu/fused.rs")) + &read(&root().join("src/cpu/mod.rs"));
    for kernel in FUSED_KERNELS {
        if !gpu_fused.contains(&format!("make(\"{kernel}\"")) {
            missing.push(format!(
                "fused.wgsl's {kernel} is not built in src/gpu/fused.rs"
            ));
        }
        if !cpu.contains(&format!("fn {kernel}(")) {
            missing.push(format!(
                "fused.wgsl's {kernel} has no CPU twin `fn {kernel}(` in src/cpu/"
            ));
        }
    }
    // matmul_coop is a third kernel of matmul's (the same product, the same wrapper and CPU
    // twin), compiled with matmul.wgsl.
    let own_twins = |name: &String| name != "fused" && name != "matmul_coop";
    for name in shader_files().into_iter().filter(own_twins) {
        let signature = format!("pub fn {name}(");
        if !ops.contains(&signature) {
            missing.push(format!(
                "shaders/{name}.wgsl has no CPU twin `{signature}` in src/cpu/ops.rs"
            ));
        }
        if !kernels.contains(&signature) {
            missing.push(format!(
                "shaders/{name}.wgsl has no GPU wrapper `{signature}` in src/gpu/kernels.rs"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// Every per-operation kernel's bindings, as a recording lays them out (`gpu::kernels::KERNELS`:
/// the uniform `Params` at 0, then the storage buffers it reads, then those it writes), are
/// what its shader declares: the page builds its layouts from them, with no shader at hand.
#[test]
fn every_kernels_bindings_are_its_shaders() {
    use mnist_gpu::gpu::kernels::{kernel_bindings, KERNELS};
    use mnist_gpu::gpu::recording::Access;
    let mut failures = Vec::new();
    for (name, _, _) in KERNELS {
        let source = SHADERS.iter().find(|(n, _)| *n == name).expect("listed").1;
        let module = naga::front::wgsl::parse_str(source).expect("parses (tested above)");
        let mut declared: Vec<(u32, Access)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let binding = g.binding.as_ref()?;
                let access = match g.space {
                    naga::AddressSpace::Uniform => Access::Uniform,
                    naga::AddressSpace::Storage { access } => {
                        if access.contains(naga::StorageAccess::STORE) {
                            Access::Write
                        } else {
                            Access::Read
                        }
                    }
                    _ => return None,
                };
                Some((binding.binding, access))
            })
            .collect();
        declared.sort_by_key(|b| b.0);
        if declared != kernel_bindings(name) {
            failures.push(format!(
                "{name}.wgsl declares {declared:?}, KERNELS says {:?}",
                kernel_bindings(name)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The layout rule of docs/ARCHITECTURE.md, read off the source: no file of `src/` imports a
//! file that imports it back (directly or around a circle), and neither backend imports the
//! other (`src/cpu` ↔ `src/gpu`): what both need lives in neutral files.
//!
//! An import is a path through `crate::`, `super::` or `mnist_gpu::` (in a `use` or inline),
//! resolved to the file of the longest module prefix that exists. A module's own files count as
//! one: its `mod.rs` and the files of its submodules may use each other's items (`gpu/fused.rs`
//! takes `StepArgs` from `gpu/mod.rs`, which holds the fused engine), so an import from a
//! module's file into its own submodules is not counted; one from a submodule to any other file,
//! its parent included, is. Unit tests (`#[cfg(test)] mod tests`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as paths relative to `src/`.
fn sources(src: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(src, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(src).expect("under src").to_path_buf());
        }
    }
}

/// A file's module path: `gpu/mod.rs` → [gpu], `gpu/fused.rs` → [gpu, fused], `lib.rs` → [].
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without its unit-test module.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths that follow `at` in `code` (`a::b::C`, or each member of `a::{b::C, d}`), as
/// segments, appended to `prefix`.
fn paths_at(code: &[char], mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        while at < code.len() && code[at].is_whitespace() {
            at += 1;
        }
        if at < code.len() && code[at] == '{' {
            // A group: each member continues the path so far.
            let mut depth = 0;
            let mut start = at + 1;
            for i in at..code.len() {
                match code[i] {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        paths_at(code, start, path.clone(), out);
                        start = i + 1;
                        if code[i] == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let end = (at..code.len())
            .find(|&i| !is_ident(code[i]))
            .unwrap_or(code.len());
        if end == at {
            break;
        }
        path.push(code[at..end].iter().collect());
        if code.get(end..end + 2) == Some(&[':', ':']) {
            at = end + 2;
        } else {
            break;
        }
    }
    out.push(path);
}

/// The module paths a file's code names through `crate::`, `super::` or `mnist_gpu::`, made
/// absolute (from the crate root).
fn named_modules(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    for (root, base) in [
        ("crate::", Vec::new()),
        ("mnist_gpu::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let pattern: Vec<char> = root.chars().collect();
        for i in 0..chars.len().saturating_sub(pattern.len()) {
            let starts = i == 0 || !is_ident(chars[i - 1]);
            if starts && chars[i..i + pattern.len()] == pattern[..] {
                paths_at(&chars, i + pattern.len(), base.clone(), &mut out);
            }
        }
    }
    out
}

/// The file of the longest prefix of `path` that is a module with a file of its own.
fn file_of(path: &[String], files: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|k| {
        let dir: PathBuf = path[..k].iter().collect();
        [dir.with_extension("rs"), dir.join("mod.rs")]
            .into_iter()
            .find(|f| files.contains(f))
    })
}

/// Every file of `src/` and the files it imports.
fn import_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut list = Vec::new();
    sources(&src, &src, &mut list);
    let files: BTreeSet<PathBuf> = list.iter().cloned().collect();
    let mut graph = BTreeMap::new();
    for file in &list {
        let text = std::fs::read_to_string(src.join(file)).expect("a readable source file");
        let module = module_of(file);
        let imports: BTreeSet<PathBuf> = named_modules(&code_of(&text), &module)
            .iter()
            .filter_map(|path| file_of(path, &files))
            .filter(|target| target != file)
            // A module's file reaching into its own submodules: one module, not an import.
            .filter(|target| !module_of(target).starts_with(&module) || module.is_empty())
            .collect();
        graph.insert(file.clone(), imports);
    }
    graph
}

/// A circle of imports through `file`, if there is one (depth-first search).
fn circle_from(
    graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    file: &PathBuf,
    trail: &mut Vec<PathBuf>,
    done: &mut BTreeSet<PathBuf>,
) -> Option<Vec<PathBuf>> {
    if let Some(at) = trail.iter().position(|f| f == file) {
        return Some(trail[at..].to_vec());
    }
    if !done.insert(file.clone()) {
        return None;
    }
    trail.push(file.clone());
    for next in &graph[file] {
        if let Some(circle) = circle_from(graph, next, trail, done) {
            return Some(circle);
        }
    }
    trail.pop();
    None
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let graph = import_graph();
    assert!(
        graph.len() > 20,
        "the walk found only {} files",
        graph.len()
    );
    let mut done = BTreeSet::new();
    for file in graph.keys() {
        if let Some(circle) = circle_from(&graph, file, &mut Vec::new(), &mut done) {
            let names: Vec<String> = circle.iter().map(|f| f.display().to_string()).collect();
            panic!(
                "an import cycle: {} -> {} (move what they share into a neutral file)",
                names.join(" -> "),
                names[0]
            );
        }
    }
}

#[test]
fn neither_backend_imports_the_other() {
    let graph = import_graph();
    let mut crossings = Vec::new();
    for (file, imports) in &graph {
        for target in imports {
            let (from, to) = (module_of(file), module_of(target));
            let backends = [from.first(), to.first()].map(|m| m.map(String::as_str));
            if matches!(
                backends,
                [Some("cpu"), Some("gpu")] | [Some("gpu"), Some("cpu")]
            ) {
                crossings.push(format!("{} -> {}", file.display(), target.display()));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "a backend imports the other (shared types belong in neutral files): {crossings:?}"
    );
    // The walk does see imports: the GPU backend takes the layout and the optimizer's state
    // from their neutral files.
    let gpu = &graph[Path::new("gpu/mod.rs")];
    assert!(
        gpu.contains(Path::new("optimizer.rs")),
        "gpu/mod.rs imports {gpu:?}"
    );
}

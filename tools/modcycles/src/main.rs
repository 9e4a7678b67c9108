//! `mnic-modcycles`: fails when a source file imports a file of its own crate that imports
//! it back (directly or through other files).
//!
//! A file *imports* another when it names an item of the other file's module by path:
//! a `use` or an inline `crate::`/`super::`/`self::` path, or a path through a child
//! module (`work::Stage` in the parent of `work`). Declaring `mod child;` is not an import.
//! Files import each other back when their modules are split by history rather than by
//! job; this check keeps the one-job-per-file structure from rotting.
//!
//! Usage: `mnic-modcycles [EXTRA_ROOT.rs ...]` checks every target of the Cargo workspace
//! (from `cargo metadata`) plus extra crate roots (the kernel modules, which Cargo does not
//! build).

mod graph;
mod refs;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;

/// Every crate root of the workspace's targets: libraries, binaries, tests, benches, examples.
fn workspace_roots() -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata output: {e}"))?;
    let mut roots = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            if let Some(src) = target["src_path"].as_str() {
                roots.push(PathBuf::from(src));
            }
        }
    }
    roots.sort();
    roots.dedup();
    Ok(roots)
}

fn main() -> ExitCode {
    let mut roots = match workspace_roots() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mnic-modcycles: {e}");
            return ExitCode::from(2);
        }
    };
    roots.extend(std::env::args().skip(1).map(PathBuf::from));
    let mut cycles = 0;
    let mut files = 0;
    for root in &roots {
        let crate_tree = match tree::CrateTree::load(root) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mnic-modcycles: {e}");
                return ExitCode::from(2);
            }
        };
        files += crate_tree.files().len();
        let (edges, evidence) = refs::file_imports(&crate_tree);
        for group in graph::cycles(&edges) {
            cycles += 1;
            eprintln!(
                "files of the crate of {} that import each other:",
                root.display()
            );
            for file in &group {
                for target in edges[file].iter().filter(|t| group.contains(t)) {
                    eprintln!(
                        "  {} imports {} ({})",
                        file.display(),
                        target.display(),
                        evidence[file][target]
                    );
                }
            }
        }
    }
    if cycles > 0 {
        eprintln!("mnic-modcycles: {cycles} import cycle(s); give each job its own file so imports run one way");
        return ExitCode::FAILURE;
    }
    println!(
        "mnic-modcycles: {} crate roots, {files} files, no import cycles",
        roots.len()
    );
    ExitCode::SUCCESS
}

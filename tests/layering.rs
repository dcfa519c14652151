//! Imports flow one way (docs/ARCHITECTURE.md, "Layers"): the configuration assembles
//! the sections that live beside their code, and the detector builds the running system
//! from it; nothing below them reaches back up. This test reads the sources and fails on
//! an import that climbs: a module below `detector` naming `crate::config` or
//! `crate::detector` (the API's use of `detector::Handles`, its one allowed back edge,
//! aside), or the velocity stage naming `crate::stream`, which calls it. Test modules are
//! not checked.

mod common;

use std::path::Path;

/// The top-level module a file of `src/` belongs to.
fn module(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn no_module_imports_from_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    common::rust_files(&src, &mut files);
    let mut climbs = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let m = module(rel);
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may build whatever they test with.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let forbidden: &[&str] = match m.as_str() {
            // The top: the binary, the command line, the detector, the assembly.
            "main" | "lib" | "cli" | "detector" | "config" => &[],
            "api" => &["crate::config"],
            "velocity" => &[
                "crate::config",
                "crate::detector",
                "crate::stream",
                "crate::api",
            ],
            _ => &["crate::config", "crate::detector", "crate::api"],
        };
        for (n, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for bad in forbidden {
                if line.contains(&format!("{bad}::")) || line.contains(&format!("{bad};")) {
                    climbs.push(format!("src/{}:{}: {line}", rel.display(), n + 1));
                }
            }
            if m == "api" && line.contains("crate::detector::") && !line.contains("Handles") {
                climbs.push(format!("src/{}:{}: {line}", rel.display(), n + 1));
            }
        }
    }
    assert!(
        climbs.is_empty(),
        "imports that climb the layers:\n{}",
        climbs.join("\n")
    );
}

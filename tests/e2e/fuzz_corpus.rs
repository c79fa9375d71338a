//! Replays every committed fuzz corpus file through its target on stable Rust.
//!
//! The bodies live in `acrpull::fuzzing`, shared with `fuzz/fuzz_targets/`, so a crash that
//! libFuzzer found (and that was added to `fuzz/corpus/<target>/`) stays fixed.

use std::path::{Path, PathBuf};

use acrpull::fuzzing::TARGETS;

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (name, _) in TARGETS {
        assert!(
            corpus_files(name).len() >= 3,
            "fuzz/corpus/{name} needs a few seeds"
        );
    }
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    for (name, target) in TARGETS {
        for file in corpus_files(name) {
            let data = std::fs::read(&file).expect("corpus file readable");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", file.display());
        }
    }
}

#[test]
fn every_fuzz_target_file_calls_its_shared_body() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        let path = dir.join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
        assert!(
            text.contains(&format!("acrpull::fuzzing::{name}(")),
            "{} must call acrpull::fuzzing::{name}",
            path.display()
        );
    }
}

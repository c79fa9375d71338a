//! acrpull's integration suite, one test binary: most modules run the real `acrpull` binary
//! against the test kit's emulated cluster and fake Azure (`acrpull_testkit::world`);
//! `manifests` checks the shipped manifests against the code, and `fuzz_corpus` replays the fuzz
//! corpora on stable.
//!
//! Run one module with `cargo test --test e2e <module>::`.

use std::path::Path;

use acrpull_testkit::world::{Acrpull, AcrpullOptions, World};

mod bad_input;
mod check;
mod faults;
mod faults_azure;
mod fixes;
mod fuzz_corpus;
mod leader;
mod manifests;
mod observability;
mod policy;
mod registry;
mod sharding;
mod status;
mod token_safety;
mod tokens;
mod v1beta1;
mod v1beta2;
mod versions;
mod watch;
mod workload;

/// The acrpull binary cargo built for this test run.
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_acrpull"))
}

/// Starts acrpull in `w` under the shipped RBAC with these extra flags.
fn acrpull(w: &mut World, args: &[&str]) -> Acrpull {
    let opts = AcrpullOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..AcrpullOptions::default()
    };
    w.start_acrpull(bin(), &opts)
}

/// The wall clock in Unix seconds, to compare with the RFC 3339 times of Secrets and status.
fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Fails the test if acrpull has exited or a thread of it panicked (the World shows its log).
fn assert_alive(p: &mut Acrpull) {
    assert!(p.exited().is_none(), "acrpull exited: {:?}", p.exited());
    assert!(!p.log.contains("panicked"), "acrpull panicked");
}

//! Helpers shared by the end-to-end tests: run the `samlab` binary and read what it wrote.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `samlab` with `args`.
pub fn samlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samlab"))
        .args(args)
        .output()
        .expect("samlab runs")
}

/// Runs `samlab`, expecting success, and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = samlab(args);
    assert!(
        out.status.success(),
        "samlab {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `samlab`, expecting exit status 2, and returns stderr.
pub fn bad(args: &[&str]) -> String {
    let out = samlab(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "samlab {args:?}: {stderr}");
    stderr
}

/// A run directory's summary.json.
pub fn summary(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

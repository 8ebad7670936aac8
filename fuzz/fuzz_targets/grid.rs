//! Sweep grid files (TOML): `samlab_sweep::grid::Grid::parse` (an inline `[base]`; a `base` path is read relative
//! to a directory that does not exist, so it fails cleanly), the expansion into runs (at most `MAX_RUNS`), and the
//! manifest built from them with every run accepted, written out as JSON and read back.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_sweep::grid::Grid;
use samlab_sweep::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(grid) = Grid::parse(text, Path::new("/nonexistent-samlab-fuzz")) else {
        return;
    };
    let Ok(manifest) = Manifest::plan(&grid, &|_| Ok(())) else {
        return;
    };
    let json = serde_json::to_string(&manifest).expect("manifests serialize");
    let back: Manifest = serde_json::from_str(&json).expect("manifests read back");
    assert_eq!(back.runs.len(), manifest.runs.len());
});

//! Run configs (TOML): the engine choice of `samlab run --config` (a top-level key only that engine's config has),
//! then the deep-net config as `samlab run`/`train --config` parse and check it before reading any data, and the
//! network its model section describes (on 1x28x28 and 3x32x32 inputs, 10 classes).
//!
//! The diagonal- and ReLU-net configs live in the `samlab` binary crate, which a fuzz target cannot link; their
//! shared parts (`[sam]`, the learning-rate schedule) are the samlab-core types fuzzed here through the deep config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samlab_deep::models::{ModelSpec, Network};
use samlab_deep::run::{check_config, DeepRunConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `run --config`: not TOML, or none of the engine keys, is an error.
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    if !table.contains_key("model") {
        return;
    }
    let Ok(config) = toml::from_str::<DeepRunConfig>(text) else {
        return;
    };
    if check_config(&config).is_err() {
        return;
    }
    let _ = toml::to_string(&config);
    let m = &config.model;
    for input in [[1, 28, 28], [3, 32, 32]] {
        let _ = Network::new(&ModelSpec {
            arch: m.arch,
            width: m.width.unwrap_or(m.arch.default_width()),
            norm: m.norm.unwrap_or(m.arch.default_norm()),
            input,
            classes: 10,
        });
    }
});

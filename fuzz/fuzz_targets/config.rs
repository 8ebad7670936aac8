//! Run configs (TOML) of every engine, as `samlab run --config` and `samlab sweep` read them:
//! `samlab_runs::AnyRunConfig::parse` (the engine chosen by a top-level key only its config has), a round trip
//! through TOML, and the checks a run makes before writing anything (`AnyRunConfig::check`). The analytic engines'
//! checks generate or read their data, so they run only on small generated data sets (a data directory named in
//! the input is never read); a deep config is checked without data, and the network its model section describes
//! is built on 1x28x28 and 3x32x32 inputs.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_deep::models::{ModelSpec, Network};
use samlab_analytic::diag::run::DataSource;
use samlab_analytic::relu::run::ReluData;
use samlab_runs::AnyRunConfig;

/// Generated data sets up to this many values are built by the checks.
const SMALL: usize = 1 << 16;

fn small(n: usize, n_test: usize, d: usize) -> bool {
    n.saturating_add(n_test).saturating_mul(d.max(1)) <= SMALL
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = AnyRunConfig::parse(Path::new("fuzz.toml"), text) else {
        return;
    };
    let checkable = match &config {
        AnyRunConfig::Diag(c) => {
            let _ = toml::to_string(c);
            matches!(&c.data, DataSource::Synthetic(s) if small(s.n, s.n_test, s.d)) && c.init_from.is_none()
        }
        AnyRunConfig::Relu(c) => {
            let _ = toml::to_string(c);
            match &c.data {
                ReluData::TwelvePoints => true,
                ReluData::TeacherStudent(t) => small(t.n, t.n_test, t.d.max(t.teacher_width)),
                ReluData::Dir(_) => false,
            }
        }
        AnyRunConfig::Deep(c) => {
            let _ = toml::to_string(c);
            let m = &c.model;
            for input in [[1, 28, 28], [3, 32, 32]] {
                let _ = Network::new(&ModelSpec {
                    arch: m.arch,
                    width: m.width.unwrap_or(m.arch.default_width()),
                    norm: m.norm.unwrap_or(m.arch.default_norm()),
                    input,
                    classes: 10,
                    transformer: m.transformer,
                });
            }
            true
        }
    };
    if checkable {
        let _ = config.check(std::path::Path::new("runs/fuzz"));
    }
});

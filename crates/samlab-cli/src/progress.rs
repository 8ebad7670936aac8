//! Progress bars (drawn on stderr only when it is a terminal).

use std::io::Write as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use samlab_core::run::{Observer, RunConfig};

/// A bar over `len` units named `unit`, with rate and ETA.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(style(unit));
    bar
}

fn style(unit: &str) -> ProgressStyle {
    let template =
        format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})");
    ProgressStyle::with_template(&template)
        .expect("valid template")
        .progress_chars("=> ")
}

/// A run's bar, in the units its engine counts (updates, or a deep run's images), with the run's lines (a deep run's
/// epochs) above it on a terminal and plain lines in a log file (where the bar is hidden).
pub struct RunBar(ProgressBar);

impl RunBar {
    /// A bar that waits for the run to start.
    pub fn new() -> RunBar {
        RunBar(bar(0, ""))
    }

    /// Clears the bar.
    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

impl Observer for RunBar {
    fn started(&mut self, done: u64, total: u64, unit: &'static str) {
        self.0.set_style(style(unit));
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.reset_eta();
    }

    fn advanced(&mut self, done: u64) -> bool {
        self.0.set_position(done);
        true
    }

    /// A closed stderr (`samlab train ... 2>&1 | head -1`) stops the run here (a deep run stays resumable), as
    /// `head` expects.
    fn line(&mut self, text: &str) -> bool {
        self.0
            .suspend(|| writeln!(std::io::stderr(), "{text}").is_ok())
    }
}

/// Runs `config` into `out` (replacing a run there only with `force`) under a [`RunBar`].
pub fn execute<C: RunConfig>(config: &C, out: &Path, force: bool) -> anyhow::Result<C::Outcome> {
    let mut bar = RunBar::new();
    let outcome = config.execute(out, force, &mut bar)?;
    bar.finish();
    Ok(outcome)
}

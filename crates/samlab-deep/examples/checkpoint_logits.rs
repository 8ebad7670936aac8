//! Writes the logits of a run's checkpoint on the first test images, with those images, as JSON: the samlab side
//! of `bench/checkpoint_to_torch.py`, which loads the same checkpoint into PyTorch and compares.
//!
//! ```text
//! cargo run --release --example checkpoint_logits -- RUN_DIR OUT.json [N=8] [last|best]
//! ```
//!
//! Evaluation mode: BatchNorm normalizes with the checkpoint's running statistics. The JSON holds `checkpoint`
//! (its path), `shape` (`[n, c, h, w]`), `input` (the images as the network sees them, flattened) and `logits`
//! (`[n, classes]`, flattened), all `f32` values written exactly.

use std::path::PathBuf;

use samlab_deep::analysis::{CheckpointKind, LoadedRun, Split};
use samlab_deep::nn::{BnMode, Ctx};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [run, out, rest @ ..] = &args[..] else {
        return Err("usage: checkpoint_logits RUN_DIR OUT.json [N=8] [last|best]".into());
    };
    let n: usize = rest.first().map_or(Ok(8), |s| s.parse())?;
    let kind = match rest.get(1).map(String::as_str) {
        None | Some("last") => CheckpointKind::Last,
        Some("best") => CheckpointKind::Best,
        Some(other) => return Err(format!("checkpoint {other:?}: last or best").into()),
    };
    let run = PathBuf::from(run);
    let loaded = LoadedRun::load(&run, kind)?;
    let batch = loaded.examples(Split::Test, n)?;
    let mut stats = loaded.state.bn.clone();
    let mut ctx = Ctx {
        params: &loaded.state.params,
        mode: BnMode::Running,
        stats: &mut stats,
        tape: None,
        grouped: None,
    };
    let logits = loaded.net.forward(&mut ctx, batch.x.clone());
    let host = |data: burn::tensor::TensorData| {
        data.try_into_vec::<f32>()
            .map_err(|e| format!("not f32: {e:?}"))
    };
    let json = serde_json::json!({
        "checkpoint": run.join("checkpoint").join(kind.file_name()),
        "shape": batch.x.dims(),
        "input": host(batch.x.to_data())?,
        "logits": host(logits.to_data())?,
    });
    std::fs::write(out, serde_json::to_string(&json)?)?;
    Ok(())
}

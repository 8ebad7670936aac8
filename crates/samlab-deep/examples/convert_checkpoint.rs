//! Converts version-1 (`SAMLABCK`) checkpoints, which samlab's tools refuse because they carry no checksum, to the
//! verified SafeTensors format (version 2), in place; each original is kept beside it as `FILE.v1`.
//!
//! ```text
//! cargo run --release -p samlab-deep --example convert_checkpoint -- FILE...
//! ```
//!
//! A version-1 file cannot be verified, so a damaged one converts into a verified copy of the damage: the sizes
//! are checked against the file and every value must be finite, but check the run's numbers after converting
//! (`samlab sharpness RUN` against its metrics.csv, say).

use std::path::PathBuf;

use samlab_deep::checkpoint::Checkpoint;
use samlab_deep::models::Network;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        return Err("usage: convert_checkpoint FILE...".into());
    }
    for file in files {
        let ckpt = Checkpoint::load_unverified_v1(&file)?;
        let net = Network::new(&ckpt.model)?;
        ckpt.check_model(&net, &file)?;
        let backup = file.with_extension("v1");
        std::fs::copy(&file, &backup)?;
        ckpt.save(&file)?;
        Checkpoint::load(&file)?;
        println!(
            "{}: converted (the version-1 original is {})",
            file.display(),
            backup.display()
        );
    }
    Ok(())
}

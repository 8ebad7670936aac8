//! Checkpoint files (SafeTensors with samlab's metadata and checksum, and the old `SAMLABCK` format through the
//! reader of its conversion), then the
//! check against the network the checkpoint names, as `run::load_checkpoint` does for a run's own model.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_deep::checkpoint::Checkpoint;
use samlab_deep::models::Network;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("last.safetensors");
    // The tools' reader (SafeTensors only), then the conversion's reader of version-1 files.
    for read in [Checkpoint::from_bytes, Checkpoint::v1_from_bytes] {
        if let Ok(ckpt) = read(data, path) {
            if let Ok(net) = Network::new(&ckpt.model) {
                let _ = ckpt.check_model(&net, path);
            }
        }
    }
});

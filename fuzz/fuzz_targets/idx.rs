//! MNIST-family IDX files, plain and gzipped: the first byte picks the form (bit 0: gzip) and where the input is
//! split into an image file and a label file, as `load_idx_dir` reads them.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_deep::data::{parse_idx, read_idx_bytes};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let gzip = mode & 1 == 1;
    // Both files in one input: a 2-byte little-endian length of the image file, then the two files.
    if rest.len() < 2 {
        return;
    }
    let cut = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
    let (images, labels) = rest[2..].split_at(cut);
    let (ip, lp) = (
        Path::new("images-idx3-ubyte"),
        Path::new("labels-idx1-ubyte"),
    );
    let images = read_idx_bytes(images, gzip, ip);
    let labels = read_idx_bytes(labels, gzip, lp);
    if let (Ok(images), Ok(labels)) = (images, labels) {
        if let Ok(set) = parse_idx(&images, &labels, ip, lp) {
            for i in 0..set.len() {
                let _ = set.image(i);
            }
        }
    }
});

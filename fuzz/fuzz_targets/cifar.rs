//! CIFAR-10 and CIFAR-100 binary files (the first byte picks which).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_deep::data::parse_cifar;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if let Ok(set) = parse_cifar(rest, Path::new("data_batch_1.bin"), mode & 1 == 1) {
        for i in 0..set.len() {
            let _ = set.image(i);
        }
    }
});

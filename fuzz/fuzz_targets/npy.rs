//! `.npy` files as samlab reads them (`--data`, `u.npy`): 1-D and 2-D f64 arrays, then the data set checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use samlab_core::data::parse_array;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    if let Ok(a) = parse_array::<ndarray::Ix2>(data, path) {
        let _ = a.sum();
    }
    if let Ok(a) = parse_array::<ndarray::Ix1>(data, path) {
        let _ = a.sum();
    }
    let _ = parse_array::<ndarray::IxDyn>(data, path);
});

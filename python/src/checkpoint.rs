//! `samlab.runs` checkpoints: a deep run's `checkpoint/*.ckpt` read and verified by samlab-core's checkpoint file
//! level (format, version, payload checksum), its tensors handed to NumPy.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use numpy::{IntoPyArray, PyArrayDyn};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use safetensors::Dtype;
use samlab_core::checkpoint_file;

/// One tensor: its name, shape and float32 values (row-major).
type Named = (String, Vec<usize>, Vec<f32>);

/// The verified metadata and tensors of the checkpoint at `path`, or the reason it is refused.
fn read(path: &Path) -> PyResult<(HashMap<String, String>, Vec<Named>)> {
    let bad = |why: String| PyValueError::new_err(format!("{}: {why}", path.display()));
    let raw = checkpoint_file::read(path).map_err(|e| match e.kind() {
        ErrorKind::InvalidInput | ErrorKind::InvalidData => bad(e.to_string()),
        _ => PyOSError::new_err(format!("{}: {e}", path.display())),
    })?;
    let (st, header) = checkpoint_file::parse(&raw).map_err(bad)?;
    let tensors = checkpoint_file::read_verified(&st, &header, |_| {
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(format!(
                    "tensor {name} is {:?}; samlab writes F32 only",
                    view.dtype()
                ));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            tensors.push((name, view.shape().to_vec(), values));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tensors)
    });
    let metadata = header.metadata().clone().unwrap_or_default();
    Ok((metadata, tensors.and_then(|t| t).map_err(bad)?))
}

/// Tensors as NumPy arrays, by name.
type Arrays<'py> = Vec<(String, Bound<'py, PyArrayDyn<f32>>)>;

/// The checkpoint at `path`: its string metadata and `(name, float32 array)` per tensor, in name order.
#[pyfunction]
fn read_checkpoint(
    py: Python<'_>,
    path: PathBuf,
) -> PyResult<(HashMap<String, String>, Arrays<'_>)> {
    let (metadata, tensors) = py.detach(|| read(&path))?;
    let arrays = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let array = ndarray::ArrayD::from_shape_vec(shape, values)
                .expect("SafeTensors checked that the data covers the shape");
            (name, array.into_pyarray(py))
        })
        .collect();
    Ok((metadata, arrays))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_checkpoint, m)?)
}

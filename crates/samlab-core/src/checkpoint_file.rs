//! The file level of samlab's checkpoints (format and layout: `samlab_deep::checkpoint`): a SafeTensors file whose
//! metadata names the format and version and carries `payload_sha256`, the SHA-256 of every tensor's bytes with
//! the tensors taken in byte order of their names. Reading a checkpoint's tensors needs no deep-learning
//! framework: the deep engine builds its network from them, the Python package hands them to NumPy.

use std::collections::HashMap;

use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

/// The `format` metadata of samlab's SafeTensors checkpoints.
pub const FORMAT: &str = "samlab-checkpoint";
/// The checkpoint format written (the SafeTensors one).
pub const ST_VERSION: u32 = 2;

/// The checkpoint's payload checksum: SHA-256 over the tensors' bytes in byte order of their names.
pub fn payload_sha256<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<(&str, &[u8])> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut sha = Sha256::new();
    for (_, bytes) in sorted {
        sha.update(bytes);
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `raw` as a SafeTensors file and its header, after checking that the announced header length lies inside the
/// file (before the parser allocates anything from it). The error says what is wrong.
pub fn parse(raw: &[u8]) -> Result<(SafeTensors<'_>, Metadata), String> {
    let Some(hlen) = raw.get(..8) else {
        return Err(format!(
            "not a samlab checkpoint: {} bytes, too short for a SafeTensors header; truncated?",
            raw.len()
        ));
    };
    let hlen = u64::from_le_bytes(hlen.try_into().expect("8 bytes"));
    if hlen.checked_add(8).is_none_or(|end| end > raw.len() as u64) {
        return Err(format!(
            "not a samlab checkpoint, or truncated: its header length {hlen} runs past the end of the file ({} bytes)",
            raw.len()
        ));
    }
    let invalid =
        |e: safetensors::SafeTensorError| format!("not a valid SafeTensors file ({e}); truncated?");
    let (_, header) = SafeTensors::read_metadata(raw).map_err(invalid)?;
    let st = SafeTensors::deserialize(raw).map_err(invalid)?;
    Ok((st, header))
}

/// The string metadata of a samlab checkpoint `st` (header `header`), after checking its format, version and
/// payload checksum.
pub fn verified_metadata(
    st: &SafeTensors<'_>,
    header: &Metadata,
) -> Result<HashMap<String, String>, String> {
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |key: &str| {
        meta.get(key).ok_or_else(|| {
            format!("a SafeTensors file without samlab's checkpoint metadata (no {key:?})")
        })
    };
    if field("format")? != FORMAT {
        return Err(format!(
            "a SafeTensors file of format {:?}, not a samlab checkpoint",
            field("format")?
        ));
    }
    if field("version")? != &ST_VERSION.to_string() {
        return Err(format!(
            "checkpoint version {}, this samlab reads {ST_VERSION}",
            field("version")?
        ));
    }
    let mut payload = Vec::new();
    for name in st.names() {
        payload.push((name, st.tensor(name).map_err(|e| e.to_string())?.data()));
    }
    let checksum = payload_sha256(payload);
    if field("payload_sha256")? != &checksum {
        return Err(format!(
            "checksum mismatch: the tensor data hashes to {checksum}, the metadata says {}; the file is damaged",
            field("payload_sha256")?
        ));
    }
    Ok(meta)
}

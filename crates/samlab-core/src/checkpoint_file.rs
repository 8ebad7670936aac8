//! The file level of samlab's checkpoints (format and layout: `samlab_deep::checkpoint`): a SafeTensors file whose
//! metadata names the format and version and carries a checksum of the payload (every tensor's bytes, the tensors
//! taken in byte order of their names): `payload_xxh3_128` (version 3, written) or `payload_sha256` (version 2,
//! still read). Reading a checkpoint's tensors needs no deep-learning framework: the deep engine builds its network
//! from them, the Python package hands them to NumPy.
//!
//! The checksum guards against damage (a flipped bit, a truncated or half-copied file), not against forgery: anyone
//! who edits a tensor can recompute an unkeyed checksum, whichever it is. XXH3-128 detects damage as well as
//! SHA-256 does for that purpose and runs at memory speed, so verifying costs a few percent of loading
//! (docs/RELIABILITY.md has the measurement) where SHA-256 cost 31-82%.

use std::collections::HashMap;

use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

/// The `format` metadata of samlab's SafeTensors checkpoints.
pub const FORMAT: &str = "samlab-checkpoint";
/// The checkpoint format written (SafeTensors with an XXH3-128 payload checksum).
pub const ST_VERSION: u32 = 3;
/// The metadata key of the payload checksum that [`ST_VERSION`] writes.
pub const CHECKSUM_KEY: &str = "payload_xxh3_128";

/// The tensors' bytes in byte order of their names.
fn sorted<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<(&'a str, &'a [u8])> {
    let mut sorted: Vec<(&str, &[u8])> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// The payload checksum written under [`CHECKSUM_KEY`]: XXH3-128 over the tensors' bytes in byte order of their
/// names, as 32 hexadecimal digits.
pub fn payload_checksum<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Xxh3::new();
    for (_, bytes) in sorted(tensors) {
        h.update(bytes);
    }
    format!("{:032x}", h.digest128())
}

/// Version 2's payload checksum: SHA-256 over the tensors' bytes in byte order of their names.
pub fn payload_sha256<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sha = Sha256::new();
    for (_, bytes) in sorted(tensors) {
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

/// The string metadata of a samlab checkpoint `st` (header `header`), after checking its format, its version (2 or
/// 3) and the payload checksum of that version.
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
    let version = field("version")?;
    let key = match version.as_str() {
        "3" => CHECKSUM_KEY,
        "2" => "payload_sha256",
        other => {
            return Err(format!(
                "checkpoint version {other}, this samlab reads 2 and {ST_VERSION}"
            ))
        }
    };
    let mut payload = Vec::new();
    for name in st.names() {
        payload.push((name, st.tensor(name).map_err(|e| e.to_string())?.data()));
    }
    let got = if key == CHECKSUM_KEY {
        payload_checksum(payload)
    } else {
        payload_sha256(payload)
    };
    if field(key)? != &got {
        return Err(format!(
            "checksum mismatch: the tensor data hashes to {got}, the metadata says {}; the file is damaged",
            field(key)?
        ));
    }
    Ok(meta)
}

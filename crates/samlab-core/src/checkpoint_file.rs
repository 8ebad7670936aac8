//! The file level of samlab's checkpoints (format and layout: `samlab_deep::checkpoint`): a SafeTensors file whose
//! metadata names the format and version and carries a checksum of the payload (every tensor's bytes, the tensors
//! taken in byte order of their names): `payload_xxh3_128` (version 3, written) or `payload_sha256` (version 2,
//! still read). Reading a checkpoint's tensors needs no deep-learning framework: the deep engine builds its network
//! from them, the Python package hands them to NumPy.
//!
//! The checksum guards against damage (a flipped bit, a truncated or half-copied file), not against forgery: anyone
//! who edits a tensor can recompute an unkeyed checksum, whichever it is. XXH3-128 detects damage as well as
//! SHA-256 does for that purpose and runs at memory speed (with AVX2 where the processor has it). Readers check it
//! on a second thread while they convert the tensors ([`read_verified`]), so verifying costs next to nothing on a
//! machine with two cores (docs/RELIABILITY.md has the measurement) where SHA-256 cost 40-87% of loading.

use std::collections::HashMap;
use std::path::Path;
use std::{fs, io};

use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use twox_hash::XxHash3_128;

/// The `format` metadata of samlab's SafeTensors checkpoints.
pub const FORMAT: &str = "samlab-checkpoint";
/// The checkpoint format written (SafeTensors with an XXH3-128 payload checksum).
pub const ST_VERSION: u32 = 3;
/// The metadata key of the payload checksum that [`ST_VERSION`] writes.
pub const CHECKSUM_KEY: &str = "payload_xxh3_128";

/// The payload size from which [`read_verified`] hashes on a second thread (16 MiB: about half a millisecond of
/// XXH3-128, ten times what starting a thread costs).
pub const THREAD_FROM: usize = 16 << 20;

/// The tensors' bytes in byte order of their names.
fn sorted<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<(&'a str, &'a [u8])> {
    let mut sorted: Vec<(&str, &[u8])> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
}

/// The payload checksum written under [`CHECKSUM_KEY`]: XXH3-128 over the tensors' bytes in byte order of their
/// names, as 32 hexadecimal digits.
pub fn payload_checksum<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = XxHash3_128::new();
    for (_, bytes) in sorted(tensors) {
        h.write(bytes);
    }
    format!("{:032x}", h.finish_128())
}

/// Version 2's payload checksum: SHA-256 over the tensors' bytes in byte order of their names.
pub fn payload_sha256<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sha = Sha256::new();
    for (_, bytes) in sorted(tensors) {
        sha.update(bytes);
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of the checkpoint file `path`: a regular file (a device such as `/dev/zero`, or a pipe, would be read
/// until memory runs out; refused with [`io::ErrorKind::InvalidInput`]), read no further than the length it had when
/// opened.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    crate::run_dir::read_capped(path, meta.len())
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

/// `read` of the samlab checkpoint `st` (header `header`) and its string metadata, run while a second thread checks
/// the payload checksum: the format and version are checked first, and `read`'s result is returned only once the
/// tensor data hashes to the checksum of that version (versions 2 and 3); a mismatch is the error whatever `read`
/// returned. Converting the tensors takes longer than hashing them, so the check adds next to no time where a
/// second core is free. A payload under [`THREAD_FROM`] bytes is checked first on this thread, where hashing it
/// costs less than starting a thread.
pub fn read_verified<T>(
    st: &SafeTensors<'_>,
    header: &Metadata,
    read: impl FnOnce(&HashMap<String, String>) -> T,
) -> Result<T, String> {
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
    let expected = field(key)?;
    let mut payload = Vec::new();
    for name in st.names() {
        payload.push((name, st.tensor(name).map_err(|e| e.to_string())?.data()));
    }
    let bytes: usize = payload.iter().map(|(_, data)| data.len()).sum();
    let verify = move || {
        let got = if key == CHECKSUM_KEY {
            payload_checksum(payload)
        } else {
            payload_sha256(payload)
        };
        if &got != expected {
            return Err(format!(
                "checksum mismatch: the tensor data hashes to {got}, the metadata says {expected}; the file is damaged"
            ));
        }
        Ok(())
    };
    if bytes < THREAD_FROM {
        verify()?;
        return Ok(read(&meta));
    }
    std::thread::scope(|s| {
        let check = s.spawn(verify);
        let out = read(&meta);
        check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints written by earlier builds (the fuzz seeds, hashed by another XXH3-128 implementation) still
    /// verify, and one flipped payload bit is refused although the reader itself succeeded.
    #[test]
    fn earlier_checkpoints_verify_and_a_flipped_bit_does_not() {
        for name in ["seed-mlp-momentum", "seed-cnn-groupnorm"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fuzz/corpus/checkpoint")
                .join(format!("{name}.safetensors"));
            let mut raw = read(&path).unwrap();
            let (st, header) = parse(&raw).unwrap();
            let version = read_verified(&st, &header, |meta| meta["version"].clone());
            assert_eq!(version, Ok("3".to_string()), "{name}");
            let last = raw.len() - 1;
            raw[last] ^= 1;
            let (st, header) = parse(&raw).unwrap();
            let err = read_verified(&st, &header, |_| ()).unwrap_err();
            assert!(err.contains("checksum mismatch"), "{name}: {err}");
        }
    }

    /// A directory is no checkpoint file: refused before anything is read.
    #[test]
    fn only_regular_files_are_read() {
        let err = read(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

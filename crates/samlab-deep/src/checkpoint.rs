//! Checkpoints: parameters, momentum buffers, BatchNorm running statistics and the run's progress, in one file
//! written atomically (a temporary file, flushed to disk, then renamed over the old one).
//!
//! **Format** (version 3): [SafeTensors](https://github.com/huggingface/safetensors), every tensor `F32`,
//! little-endian, with its real shape and a PyTorch-style name, so that `safetensors.torch.load_file` gives a
//! `state_dict` for the matching PyTorch model:
//!
//! | tensors | names | shape |
//! |---|---|---|
//! | parameters | as [`Network::params`]: `conv1.weight`, `layer1.0.bn1.bias`, `linear.weight`, ... | PyTorch's: conv `[out, in, k, k]`, Linear `[out, in]` (samlab's `[in, out]` transposed) |
//! | BatchNorm running statistics | `<layer>.running_mean`, `<layer>.running_var` (e.g. `layer1.0.bn1.running_var`) | `[channels]` |
//! | momentum buffers (`last.ckpt` only) | `optimizer.momentum.<parameter name>` | as the parameter |
//! | a SAM variant's direction (`last.ckpt` of F-SAM, VaSSO, LookSAM) | `optimizer.variant.<parameter name>` | as the parameter |
//! | AdamW's second moments (`last.ckpt` of AdamW runs; its first moments are the momentum buffers) | `optimizer.second_moment.<parameter name>` | as the parameter |
//!
//! No `num_batches_tracked` is written (samlab does not count batches; PyTorch uses the count only with
//! `momentum=None`, and its BatchNorm fills in a missing one when loading): drop the `optimizer.` tensors and
//! `load_state_dict(..., strict=True)` takes the rest (`bench/checkpoint_to_torch.py`). The string metadata holds
//! `format` (`samlab-checkpoint`), `version` (`3`), `model` (the [`ModelSpec`] as JSON), `progress` (JSON),
//! `momentum` (`true` or `false`), `variant` (`true` when the variant's direction is there; absent means `false`),
//! `variant_steps` (the variant's step count; absent means 0), `second_moment` (`true` when AdamW's second
//! moments are there; absent means `false`), `adam_steps` (AdamW's step count; absent means 0) and `payload_xxh3_128`: the XXH3-128 checksum (32
//! hexadecimal digits) of every tensor's raw bytes, the tensors taken in byte order of their names (SafeTensors
//! lays all-`F32` files out in that order, so it is also the checksum of the data section after the header;
//! `samlab_core::checkpoint_file`). **Version 2** is the same with `payload_sha256`, the SHA-256 of those bytes; it
//! is still read. Values are stored bit for bit (a transpose moves them, never rounds them),
//! which is what makes a resumed run identical to an uninterrupted one.
//!
//! **Loading** checks, before any value is used: that the header length fits inside the file, the SafeTensors
//! header (tensor offsets cover the data exactly), the metadata, the checksum, that the model spec builds a network,
//! that every tensor of that network is there with its shape and no other (a `num_batches_tracked` is ignored),
//! and that every value is finite. Nothing is allocated from a size the file announces before that size has been
//! checked against the file's length.
//!
//! **Version 1** (written before SafeTensors; refused by [`Checkpoint::load`], which names the way to convert it,
//! since it has no checksum; read only by [`Checkpoint::load_unverified_v1`] for that conversion): the 8 bytes
//! `SAMLABCK`, a little-endian `u32` version (1), a `u64` header length, the header as JSON (model spec, tensor
//! names and sizes, the run's progress), then every tensor's `f32` values, little-endian, in header order.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, View};
use samlab_core::DataError;
use serde::{Deserialize, Serialize};

use crate::models::{ModelSpec, Network};
use crate::nn::BnStats;
use crate::optim::AdamState;
use crate::trainer::TrainState;
use samlab_core::ascent::VariantState;
use samlab_core::checkpoint_file::{self, payload_checksum, CHECKSUM_KEY};
use samlab_core::run_dir::write_atomic;

pub use samlab_core::checkpoint_file::{FORMAT, ST_VERSION};
/// Prefix of the momentum buffers' names.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// Prefix of the names of a SAM variant's direction.
pub const VARIANT_PREFIX: &str = "optimizer.variant.";
/// Name prefix of AdamW's second moments.
pub const SECOND_MOMENT_PREFIX: &str = "optimizer.second_moment.";

const MAGIC: &[u8; 8] = b"SAMLABCK";
const VERSION: u32 = 1;

/// One tensor of the SafeTensors layout: its name and shape in the file, and for a Linear weight its samlab
/// shape `[in, out]` (the file holds the transpose, PyTorch's `[out, in]`).
struct Entry {
    name: String,
    shape: Vec<usize>,
    transpose: Option<(usize, usize)>,
}

impl Entry {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The file's bytes for samlab's values `v` (of the right size).
    fn encode(&self, v: &[f32]) -> F32Tensor {
        let mut bytes = Vec::with_capacity(4 * v.len());
        match self.transpose {
            Some((din, dout)) => {
                for o in 0..dout {
                    for i in 0..din {
                        bytes.extend_from_slice(&v[i * dout + o].to_le_bytes());
                    }
                }
            }
            None => v
                .iter()
                .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
        }
        F32Tensor {
            shape: self.shape.clone(),
            bytes,
        }
    }

    /// samlab's values from the file's bytes (`4 * numel` of them).
    fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        let file: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        match self.transpose {
            Some((din, dout)) => {
                let mut v = vec![0.0; file.len()];
                for o in 0..dout {
                    for i in 0..din {
                        v[i * dout + o] = file[o * din + i];
                    }
                }
                v
            }
            None => file,
        }
    }
}

/// The tensors of a network's checkpoint, by kind: `(kind in messages, kind in `extra.` names, entries)`.
struct Layout {
    groups: [(&'static str, &'static str, Vec<Entry>); KINDS],
}

impl Layout {
    fn of(net: &Network) -> Self {
        let params = |prefix: &str| -> Vec<Entry> {
            net.params()
                .iter()
                .map(|p| {
                    // The only 2-D parameters are Linear weights, `[in, out]` in samlab.
                    let (shape, transpose) = match p.shape[..] {
                        [din, dout] => (vec![dout, din], Some((din, dout))),
                        _ => (p.shape.clone(), None),
                    };
                    Entry {
                        name: format!("{prefix}{}", p.name),
                        shape,
                        transpose,
                    }
                })
                .collect()
        };
        let bn = |suffix: &str| -> Vec<Entry> {
            net.bn_slots()
                .iter()
                .map(|s| Entry {
                    name: format!("{}.{suffix}", s.name),
                    shape: vec![s.channels],
                    transpose: None,
                })
                .collect()
        };
        Layout {
            groups: [
                ("parameter", "param", params("")),
                ("momentum", "momentum", params(MOMENTUM_PREFIX)),
                ("BatchNorm running mean", "bn_mean", bn("running_mean")),
                ("BatchNorm running variance", "bn_var", bn("running_var")),
                ("variant direction", "variant", params(VARIANT_PREFIX)),
                (
                    "AdamW second moment",
                    "second_moment",
                    params(SECOND_MOMENT_PREFIX),
                ),
            ],
        }
    }
}

/// An `F32` tensor to write.
struct F32Tensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32Tensor {
    fn flat(v: &[f32]) -> Self {
        F32Tensor {
            shape: vec![v.len()],
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

impl View for F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    model: ModelSpec,
    tensors: Vec<(String, usize)>,
    has_velocity: bool,
    progress: serde_json::Value,
}

/// The contents of a checkpoint file, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model it belongs to.
    pub model: ModelSpec,
    /// Parameter values, one vector per parameter.
    pub params: Vec<Vec<f32>>,
    /// Momentum buffers (absent in weights-only checkpoints).
    pub velocity: Option<Vec<Vec<f32>>>,
    /// The SAM variant's direction (F-SAM's, VaSSO's, LookSAM's), saved with the momentum buffers.
    pub variant: Option<Vec<Vec<f32>>>,
    /// The SAM variant's step count (LookSAM's period), saved with the momentum buffers (else 0).
    pub variant_steps: u64,
    /// AdamW's second moments, saved with the momentum buffers (its first moments).
    pub second_moment: Option<Vec<Vec<f32>>>,
    /// AdamW's step count (its bias correction), saved with the momentum buffers (else 0).
    pub adam_steps: u64,
    /// BatchNorm running means, per slot.
    pub bn_mean: Vec<Vec<f32>>,
    /// BatchNorm running variances, per slot.
    pub bn_var: Vec<Vec<f32>>,
    /// The run's progress (counters, metrics so far), as the run module defines it.
    pub progress: serde_json::Value,
}

/// Why every tool refuses a version-1 checkpoint, and how to convert one.
const V1_REFUSED: &str = "a version-1 (SAMLABCK) checkpoint, which carries no checksum, so a damaged one cannot be told from a good one; samlab reads only verified (SafeTensors, version 2) checkpoints. Convert it once with `cargo run --release -p samlab-deep --example convert_checkpoint -- FILE` (it keeps the original as FILE.v1), then check the run's numbers";

fn host(t: &Tensor<1>) -> Vec<f32> {
    t.to_data().try_into_vec::<f32>().expect("f32 tensor")
}

fn device_vec(v: &[Vec<f32>], device: &Device) -> Vec<Tensor<1>> {
    v.iter()
        .map(|x| Tensor::from_data(TensorData::new(x.clone(), [x.len()]), device))
        .collect()
}

/// A kind of tensor in a checkpoint (its name in messages), its tensors (if present) and the model's sizes.
type TensorGroup<'a> = (&'static str, Option<&'a Vec<Vec<f32>>>, &'a [usize]);

/// The number of kinds of tensors in a checkpoint (parameters, momentum, running means and variances, variant,
/// AdamW's second moments).
const KINDS: usize = 6;

impl Checkpoint {
    /// Captures `state` (with its optimizer state, the momentum buffers and the SAM variant's state, if
    /// `with_velocity`) and `progress`.
    pub fn capture(
        net: &Network,
        state: &TrainState,
        with_velocity: bool,
        progress: serde_json::Value,
    ) -> Self {
        Checkpoint {
            model: net.spec().clone(),
            params: state.params.iter().map(host).collect(),
            velocity: with_velocity.then(|| state.velocity.iter().map(host).collect()),
            variant: state
                .variant
                .direction
                .as_ref()
                .filter(|_| with_velocity)
                .map(|d| d.iter().map(host).collect()),
            variant_steps: if with_velocity {
                state.variant.steps
            } else {
                0
            },
            second_moment: state
                .adam
                .as_ref()
                .filter(|_| with_velocity)
                .map(|a| a.second_moment.iter().map(host).collect()),
            adam_steps: state
                .adam
                .as_ref()
                .filter(|_| with_velocity)
                .map_or(0, |a| a.steps),
            bn_mean: state.bn.mean.iter().map(host).collect(),
            bn_var: state.bn.var.iter().map(host).collect(),
            progress,
        }
    }

    /// Fails unless the checkpoint holds exactly the tensors of `net` (same model spec; every parameter, momentum
    /// buffer and BatchNorm statistic of the right size) and every value is possible
    /// ([`Checkpoint::impossible_value`]).
    pub fn check_model(&self, net: &Network, path: &Path) -> Result<(), DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        if &self.model != net.spec() {
            return Err(bad(format!(
                "checkpoint of a different model: it holds {} (width {}, {:?} norm, input {:?}, {} classes), this run is {} (width {}, {:?} norm, input {:?}, {} classes)",
                self.model.arch.name(), self.model.width, self.model.norm, self.model.input, self.model.classes,
                net.spec().arch.name(), net.spec().width, net.spec().norm, net.spec().input, net.spec().classes,
            )));
        }
        let params: Vec<usize> = net.params().iter().map(|s| s.numel()).collect();
        let channels = net.bn_channels();
        let groups: [TensorGroup; KINDS] = [
            ("parameter", Some(&self.params), &params),
            ("momentum", self.velocity.as_ref(), &params),
            ("BatchNorm running mean", Some(&self.bn_mean), channels),
            ("BatchNorm running variance", Some(&self.bn_var), channels),
            ("variant direction", self.variant.as_ref(), &params),
            ("AdamW second moment", self.second_moment.as_ref(), &params),
        ];
        for (what, tensors, sizes) in groups {
            let Some(tensors) = tensors else { continue };
            if tensors.len() != sizes.len() {
                return Err(bad(format!(
                    "checkpoint holds {} {what} tensors, the model has {}",
                    tensors.len(),
                    sizes.len()
                )));
            }
            for (i, (v, &n)) in tensors.iter().zip(sizes).enumerate() {
                if v.len() != n {
                    return Err(bad(format!(
                        "checkpoint {what} tensor {i} holds {} values, the model's has {n}",
                        v.len()
                    )));
                }
            }
        }
        if let Some(reason) = self.impossible_value() {
            return Err(bad(reason));
        }
        Ok(())
    }

    /// The first value no trained network can hold, in words: a non-finite value in any tensor (parameters,
    /// momentum, variant direction, BatchNorm statistics) or a negative BatchNorm running variance (whose
    /// square root normalizes). `None` when every value is possible.
    pub fn impossible_value(&self) -> Option<String> {
        let groups = [
            ("parameter", Some(&self.params)),
            ("momentum", self.velocity.as_ref()),
            ("BatchNorm running mean", Some(&self.bn_mean)),
            ("BatchNorm running variance", Some(&self.bn_var)),
            ("variant direction", self.variant.as_ref()),
            ("AdamW second moment", self.second_moment.as_ref()),
        ];
        for (what, tensors) in groups {
            for (i, v) in tensors.into_iter().flatten().enumerate() {
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Some(format!(
                        "checkpoint {what} tensor {i} holds a non-finite value at index {j}"
                    ));
                }
            }
        }
        for (i, v) in self.bn_var.iter().enumerate() {
            if let Some(j) = v.iter().position(|&x| x < 0.0) {
                return Some(format!(
                    "checkpoint BatchNorm running variance tensor {i} holds a negative variance ({}) at index {j}",
                    v[j]
                ));
            }
        }
        for (i, v) in self.second_moment.iter().flatten().enumerate() {
            if let Some(j) = v.iter().position(|&x| x < 0.0) {
                return Some(format!(
                    "checkpoint AdamW second moment tensor {i} holds a negative value ({}) at index {j}",
                    v[j]
                ));
            }
        }
        None
    }

    /// The training state on `device` (zero momentum if the checkpoint has none).
    pub fn to_state(&self, device: &Device) -> TrainState {
        let params = device_vec(&self.params, device);
        let velocity = match &self.velocity {
            Some(v) => device_vec(v, device),
            None => params.iter().map(Tensor::zeros_like).collect(),
        };
        TrainState {
            params,
            velocity,
            bn: BnStats {
                mean: device_vec(&self.bn_mean, device),
                var: device_vec(&self.bn_var, device),
            },
            variant: VariantState {
                direction: self.variant.as_ref().map(|d| device_vec(d, device)),
                steps: self.variant_steps,
            },
            adam: self.second_moment.as_ref().map(|v| AdamState {
                second_moment: device_vec(v, device),
                steps: self.adam_steps,
            }),
        }
    }

    /// Writes the checkpoint to `path` atomically, as SafeTensors (see the module documentation).
    ///
    /// The tensors are named and shaped after the checkpoint's model. A tensor whose size does not fit the model
    /// (possible only for a hand-edited `Checkpoint`) is written flat, and one beyond the model's count under
    /// `extra.<kind>.<index>`: the file is written either way, and loading it names the problem.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let net = Network::new(&self.model).map_err(io::Error::other)?;
        let layout = Layout::of(&net);
        let empty = Vec::new();
        let values = [
            &self.params,
            self.velocity.as_ref().unwrap_or(&empty),
            &self.bn_mean,
            &self.bn_var,
            self.variant.as_ref().unwrap_or(&empty),
            self.second_moment.as_ref().unwrap_or(&empty),
        ];
        let mut tensors: Vec<(String, F32Tensor)> = Vec::new();
        for ((_, key, entries), values) in layout.groups.iter().zip(values) {
            for (i, v) in values.iter().enumerate() {
                tensors.push(match entries.get(i) {
                    Some(e) if e.numel() == v.len() => (e.name.clone(), e.encode(v)),
                    Some(e) => (e.name.clone(), F32Tensor::flat(v)),
                    None => (format!("extra.{key}.{i}"), F32Tensor::flat(v)),
                });
            }
        }
        let checksum = payload_checksum(tensors.iter().map(|(n, t)| (n.as_str(), &t.bytes[..])));
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), ST_VERSION.to_string()),
            (
                "model".to_string(),
                serde_json::to_string(&self.model).map_err(io::Error::other)?,
            ),
            (
                "progress".to_string(),
                serde_json::to_string(&self.progress).map_err(io::Error::other)?,
            ),
            ("momentum".to_string(), self.velocity.is_some().to_string()),
            ("variant".to_string(), self.variant.is_some().to_string()),
            ("variant_steps".to_string(), self.variant_steps.to_string()),
            (
                "second_moment".to_string(),
                self.second_moment.is_some().to_string(),
            ),
            ("adam_steps".to_string(), self.adam_steps.to_string()),
            (CHECKSUM_KEY.to_string(), checksum),
        ]);
        let bytes = safetensors::serialize(tensors, Some(metadata)).map_err(io::Error::other)?;
        write_atomic(path, |tmp| fs::write(tmp, &bytes))
    }

    /// Reads a checkpoint, naming the file and the problem if it is missing, truncated or not a checkpoint.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let raw = checkpoint_file::read(path).map_err(|e| bad(e.to_string()))?;
        Self::from_bytes(&raw, path)
    }

    /// [`Checkpoint::load`] of a file's bytes already in memory; `path` only names it in errors.
    pub fn from_bytes(raw: &[u8], path: &Path) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        if raw.starts_with(MAGIC) {
            return Err(bad(V1_REFUSED.into()));
        }
        Self::load_safetensors(raw, &bad)
    }

    /// Reads a version-1 (`SAMLABCK`) checkpoint, which carries no checksum, so nothing can tell a damaged one from
    /// a good one: only for converting it once (`cargo run --release -p samlab-deep --example convert_checkpoint --
    /// FILE`), never by the tools, which refuse it ([`Checkpoint::load`]). Its sizes are still checked against the
    /// file, and [`Checkpoint::check_model`] still checks its values.
    pub fn load_unverified_v1(path: &Path) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let raw = checkpoint_file::read(path).map_err(|e| bad(e.to_string()))?;
        Self::v1_from_bytes(&raw, path)
    }

    /// [`Checkpoint::load_unverified_v1`] of a file's bytes already in memory; `path` only names it in errors.
    pub fn v1_from_bytes(raw: &[u8], path: &Path) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        if !raw.starts_with(MAGIC) {
            return Err(bad("not a version-1 (SAMLABCK) checkpoint".into()));
        }
        Self::load_v1(raw, &bad)
    }

    /// Reads a PyTorch `state_dict` saved with `safetensors.torch.save_file` as the weights of `model`: every
    /// parameter and BatchNorm running statistic of the model under its PyTorch-style name (see the module
    /// documentation), `F32`, in PyTorch's shape, all finite; `num_batches_tracked` may be there too, nothing else
    /// (strip a DataParallel `module.` prefix first). No metadata is needed; there is no momentum.
    pub fn from_state_dict(path: &Path, model: &ModelSpec) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let raw = checkpoint_file::read(path).map_err(|e| bad(e.to_string()))?;
        let (st, _) = checkpoint_file::parse(&raw).map_err(bad)?;
        let net = Network::new(model).map_err(|e| bad(format!("invalid model: {e}")))?;
        let [params, _, bn_mean, bn_var, _, _] = read_tensors(&st, &net, [false; 3], &bad)?;
        let ckpt = Checkpoint {
            model: model.clone(),
            params,
            velocity: None,
            variant: None,
            variant_steps: 0,
            second_moment: None,
            adam_steps: 0,
            bn_mean,
            bn_var,
            progress: serde_json::json!({ "imported_from": path.display().to_string() }),
        };
        if let Some(reason) = ckpt.impossible_value() {
            return Err(bad(reason));
        }
        Ok(ckpt)
    }

    /// Reads a SafeTensors checkpoint (version 2).
    fn load_safetensors(raw: &[u8], bad: &dyn Fn(String) -> DataError) -> Result<Self, DataError> {
        let (st, header) = checkpoint_file::parse(raw).map_err(bad)?;
        checkpoint_file::read_verified(&st, &header, |meta| Self::from_verified(&st, meta, bad))
            .map_err(bad)?
    }

    /// The checkpoint `st` with string metadata `meta` (format and version checked; [`Checkpoint::load_safetensors`]
    /// checks the payload meanwhile).
    fn from_verified(
        st: &SafeTensors,
        meta: &HashMap<String, String>,
        bad: &dyn Fn(String) -> DataError,
    ) -> Result<Self, DataError> {
        let field = |key: &str| -> Result<&String, DataError> {
            meta.get(key).ok_or_else(|| {
                bad(format!(
                    "a SafeTensors file without samlab's checkpoint metadata (no {key:?})"
                ))
            })
        };
        let model: ModelSpec = serde_json::from_str(field("model")?)
            .map_err(|e| bad(format!("bad model spec in the metadata: {e}")))?;
        let progress: serde_json::Value = serde_json::from_str(field("progress")?)
            .map_err(|e| bad(format!("bad progress record in the metadata: {e}")))?;
        let flag = |key: &str, value: Option<&String>| match value.map(String::as_str) {
            Some("true") => Ok(true),
            Some("false") | None => Ok(false),
            Some(other) => Err(bad(format!("bad {key} flag {other:?} in the metadata"))),
        };
        let has_velocity = flag("momentum", Some(field("momentum")?))?;
        let has_variant = flag("variant", meta.get("variant"))?;
        let steps = |key: &str| match meta.get(key) {
            None => Ok(0),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| bad(format!("bad {key} {v:?} in the metadata"))),
        };
        let variant_steps = steps("variant_steps")?;
        let adam_steps = steps("adam_steps")?;
        let has_second_moment = flag("second_moment", meta.get("second_moment"))?;
        let net = Network::new(&model)
            .map_err(|e| bad(format!("checkpoint of an invalid model: {e}")))?;
        let [params, velocity, bn_mean, bn_var, variant, second_moment] = read_tensors(
            st,
            &net,
            [has_velocity, has_variant, has_second_moment],
            bad,
        )?;
        Ok(Checkpoint {
            model,
            params,
            velocity: has_velocity.then_some(velocity),
            variant: has_variant.then_some(variant),
            variant_steps,
            second_moment: has_second_moment.then_some(second_moment),
            adam_steps,
            bn_mean,
            bn_var,
            progress,
        })
    }

    /// Reads a checkpoint of version 1 (`SAMLABCK`).
    fn load_v1(raw: &[u8], bad: &dyn Fn(String) -> DataError) -> Result<Self, DataError> {
        if raw.len() < 20 {
            return Err(bad("truncated samlab checkpoint header".into()));
        }
        let version = u32::from_le_bytes(raw[8..12].try_into().unwrap());
        if version != VERSION {
            return Err(bad(format!(
                "checkpoint version {version}, this samlab reads {VERSION}"
            )));
        }
        let hlen = u64::from_le_bytes(raw[12..20].try_into().unwrap());
        let body_start = usize::try_from(hlen)
            .ok()
            .and_then(|h| h.checked_add(20))
            .filter(|&end| end <= raw.len())
            .ok_or_else(|| bad(format!("truncated header (it announces {hlen} bytes)")))?;
        let header: Header = serde_json::from_slice(&raw[20..body_start])
            .map_err(|e| bad(format!("bad header: {e}")))?;
        let body = &raw[body_start..];
        let total = header
            .tensors
            .iter()
            .try_fold(0usize, |acc, (_, n)| acc.checked_add(*n))
            .and_then(|n| n.checked_mul(4));
        if total != Some(body.len()) {
            return Err(bad(format!(
                "{} bytes of tensor data, not what the header announces; truncated?",
                body.len()
            )));
        }
        let mut values = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
        let mut take = |n: usize| -> Vec<f32> { values.by_ref().take(n).collect() };
        let (mut params, mut velocity, mut bn_mean, mut bn_var) = (vec![], vec![], vec![], vec![]);
        for (name, n) in &header.tensors {
            let v = take(*n);
            match name.split('/').next() {
                Some("param") => params.push(v),
                Some("velocity") => velocity.push(v),
                Some("bn") if name.ends_with("/mean") => bn_mean.push(v),
                Some("bn") => bn_var.push(v),
                _ => return Err(bad(format!("unknown tensor {name:?}"))),
            }
        }
        Ok(Checkpoint {
            model: header.model,
            params,
            velocity: header.has_velocity.then_some(velocity),
            variant: None,
            variant_steps: 0,
            second_moment: None,
            adam_steps: 0,
            bn_mean,
            bn_var,
            progress: header.progress,
        })
    }
}

/// The header-length check (before anything sized from the file is allocated) and the SafeTensors parse.
/// The parameters, momentum buffers (empty unless `optional[0]`), BatchNorm running means and variances, the
/// variant's direction (empty unless `optional[1]`) and AdamW's second moments (empty unless `optional[2]`) of
/// `net` from `st`: each present, `F32`, of its shape and finite, and no other tensor but `num_batches_tracked`.
fn read_tensors(
    st: &SafeTensors,
    net: &Network,
    optional: [bool; 3],
    bad: &dyn Fn(String) -> DataError,
) -> Result<[Vec<Vec<f32>>; KINDS], DataError> {
    let names = st.names();
    let layout = Layout::of(net);
    let mut known = BTreeSet::new();
    let mut groups: Vec<Vec<Vec<f32>>> = Vec::new();
    for (g, (what, _, entries)) in layout.groups.iter().enumerate() {
        let mut values = Vec::new();
        if (g == 1 && !optional[0]) || (g == 4 && !optional[1]) || (g == 5 && !optional[2]) {
            groups.push(values);
            continue;
        }
        for e in entries {
            known.insert(e.name.as_str());
            let t = st.tensor(&e.name).map_err(|_| {
                bad(format!(
                    "checkpoint lacks the {what} tensor {} of its model ({})",
                    e.name,
                    net.spec().arch.name()
                ))
            })?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "checkpoint {what} tensor {} is {:?}, not F32",
                    e.name,
                    t.dtype()
                )));
            }
            if t.shape() != e.shape.as_slice() {
                return Err(bad(format!(
                    "checkpoint {what} tensor {} has shape {:?}, the model's has {:?}",
                    e.name,
                    t.shape(),
                    e.shape
                )));
            }
            let v = e.decode(t.data());
            if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!(
                    "checkpoint {what} tensor {} holds a non-finite value at index {j}",
                    e.name
                )));
            }
            values.push(v);
        }
        groups.push(values);
    }
    if let Some(extra) = names
        .iter()
        .find(|n| !known.contains(*n) && !n.ends_with(".num_batches_tracked"))
    {
        return Err(bad(format!(
            "checkpoint holds a tensor {extra} that its model ({}) has not",
            net.spec().arch.name()
        )));
    }
    let mut groups = groups.into_iter();
    let mut next = || groups.next().unwrap();
    Ok([next(), next(), next(), next(), next(), next()])
}

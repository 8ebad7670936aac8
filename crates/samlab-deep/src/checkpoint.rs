//! Checkpoints: parameters, momentum buffers, BatchNorm running statistics and the run's progress, in one file
//! written atomically (a temporary file, flushed to disk, then renamed over the old one).
//!
//! Format: the 8 bytes `SAMLABCK`, a little-endian `u32` version (1), a `u64` header length, the header as JSON
//! (model spec, tensor names and shapes, the run's progress), then every tensor's `f32` values, little-endian, in
//! header order. Values are stored bit for bit, which is what makes a resumed run identical to an uninterrupted one.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::DataError;
use serde::{Deserialize, Serialize};

use crate::models::{ModelSpec, Network};
use crate::nn::BnStats;
use crate::trainer::TrainState;

const MAGIC: &[u8; 8] = b"SAMLABCK";
const VERSION: u32 = 1;

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
    /// BatchNorm running means, per slot.
    pub bn_mean: Vec<Vec<f32>>,
    /// BatchNorm running variances, per slot.
    pub bn_var: Vec<Vec<f32>>,
    /// The run's progress (counters, metrics so far), as the run module defines it.
    pub progress: serde_json::Value,
}

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

impl Checkpoint {
    /// Captures `state` (with its momentum buffers if `with_velocity`) and `progress`.
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
            bn_mean: state.bn.mean.iter().map(host).collect(),
            bn_var: state.bn.var.iter().map(host).collect(),
            progress,
        }
    }

    /// Fails unless the checkpoint holds exactly the tensors of `net` (same model spec; every parameter, momentum
    /// buffer and BatchNorm statistic of the right size) and every value is finite.
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
        let groups: [TensorGroup; 4] = [
            ("parameter", Some(&self.params), &params),
            ("momentum", self.velocity.as_ref(), &params),
            ("BatchNorm running mean", Some(&self.bn_mean), channels),
            ("BatchNorm running variance", Some(&self.bn_var), channels),
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
                if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!(
                        "checkpoint {what} tensor {i} holds a non-finite value at index {j}"
                    )));
                }
            }
        }
        Ok(())
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
        }
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut tensors: Vec<(String, &Vec<f32>)> = Vec::new();
        for (i, v) in self.params.iter().enumerate() {
            tensors.push((format!("param/{i}"), v));
        }
        if let Some(vel) = &self.velocity {
            for (i, v) in vel.iter().enumerate() {
                tensors.push((format!("velocity/{i}"), v));
            }
        }
        for (i, (m, v)) in self.bn_mean.iter().zip(&self.bn_var).enumerate() {
            tensors.push((format!("bn/{i}/mean"), m));
            tensors.push((format!("bn/{i}/var"), v));
        }
        let header = Header {
            model: self.model.clone(),
            tensors: tensors.iter().map(|(n, v)| (n.clone(), v.len())).collect(),
            has_velocity: self.velocity.is_some(),
            progress: self.progress.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(io::Error::other)?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = io::BufWriter::new(fs::File::create(&tmp)?);
            f.write_all(MAGIC)?;
            f.write_all(&VERSION.to_le_bytes())?;
            f.write_all(&(header.len() as u64).to_le_bytes())?;
            f.write_all(&header)?;
            for (_, v) in &tensors {
                for x in v.iter() {
                    f.write_all(&x.to_le_bytes())?;
                }
            }
            f.flush()?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, path)
    }

    /// Reads a checkpoint, naming the file and the problem if it is missing, truncated or not a checkpoint.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bad = |reason: String| DataError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let raw = fs::read(path).map_err(|e| bad(e.to_string()))?;
        if raw.len() < 20 || &raw[..8] != MAGIC {
            return Err(bad("not a samlab checkpoint".into()));
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
            bn_mean,
            bn_var,
            progress: header.progress,
        })
    }
}

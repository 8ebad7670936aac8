//! # samlab-deep
//!
//! Deep nets for samlab on [burn](https://burn.dev) 0.22 (the `flex` CPU backend by default; `wgpu`/`vulkan`,
//! `cuda` and `tch` as opt-in features):
//!
//! - [`models`]: PreAct ResNet-18/34 with BatchNorm or GroupNorm, post-activation ResNet-34, WRN-28-k, a small CNN
//!   and an MLP, with a width multiplier and the authors' initialization; a small ViT and an MLP-Mixer
//!   ([`transformer`]);
//! - [`data`]: CIFAR-10/100 binary and MNIST/Fashion-MNIST IDX loaders, the shipped Fashion-MNIST subset, the
//!   seeded validation split, label noise and augmentation;
//! - [`trainer`]: one optimizer step of every member of the SAM family that
//!   [`SamConfig`](samlab_core::sam::SamConfig) describes, with SGD + momentum, L2 or decoupled weight decay and
//!   an explicit BatchNorm policy for the SAM passes;
//! - [`run`]: whole runs into run directories, with atomic checkpoints (last and best-by-validation), exact
//!   resume and fine-tuning from another run;
//! - [`bench`](mod@bench): the throughput of one training step on random batches (`samlab bench-step`);
//! - [`analysis`]: what a finished run's weights look like: worst-case and average m-sharpness, linear
//!   interpolation between two runs, the top Hessian eigenvalue and the feature sparsity of the last block.
//!
//! Everything random comes from counter-keyed streams ([`rng`]), so a run is a pure function of its config.
#![deny(missing_docs)]

pub mod analysis;
pub mod bench;
pub mod checkpoint;
pub mod data;
mod grouped;
pub mod hessian;
mod lowrank;
pub mod models;
pub mod nn;
mod observe;
pub mod optim;
pub mod oracle;
pub mod rng;
pub mod run;
pub mod state;
mod step;
pub mod trainer;
pub mod transformer;

/// The compute device: the `flex` CPU backend unless `name` asks for another compiled-in backend.
///
/// `wgpu` lets wgpu pick the graphics API (Vulkan on Linux, shaders in WGSL); `vulkan` pins Vulkan and compiles
/// kernels to SPIR-V. Both take the highest-power adapter wgpu finds (a GPU before lavapipe, Mesa's software
/// Vulkan device). No adapter, or a driver that refuses a device, is an error here, never a panic later.
pub fn device(name: &str) -> Result<burn::tensor::Device, samlab_core::ConfigError> {
    let bad = |reason: String| samlab_core::ConfigError::Invalid {
        field: "device",
        reason,
    };
    match name {
        #[cfg(feature = "flex")]
        "flex" | "cpu" => Ok(burn::tensor::Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(burn::tensor::Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => wgpu_device(burn::tensor::wgpu::WgpuBackend::Auto).map_err(bad),
        #[cfg(feature = "vulkan")]
        "vulkan" => wgpu_device(burn::tensor::wgpu::WgpuBackend::Vulkan).map_err(bad),
        // burn 0.22 deprecates burn-tch in favour of CubeCL backends; it is still the way to reach libtorch.
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        "tch" => Ok(burn::tensor::Device::libtorch()),
        other => Err(bad(format!(
            "{other:?} is not available in this build (compiled backends: {}); the GPU backends are cargo \
             features: cargo install --path crates/samlab-cli --features wgpu (or vulkan, cuda, tch)",
            compiled_backends().join(", ")
        ))),
    }
}

/// The wgpu device on graphics API `api`, initialized once per process (burn refuses a second
/// initialization of the same runtime, and a failed one is remembered rather than retried).
#[cfg(feature = "wgpu")]
fn wgpu_device(api: burn::tensor::wgpu::WgpuBackend) -> Result<burn::tensor::Device, String> {
    use burn::tensor::wgpu::WgpuBackend;
    use std::sync::OnceLock;
    type Slot = OnceLock<Result<burn::tensor::Device, String>>;
    static AUTO: Slot = OnceLock::new();
    static VULKAN: Slot = OnceLock::new();
    let slot = match api {
        WgpuBackend::Vulkan => &VULKAN,
        _ => &AUTO,
    };
    slot.get_or_init(|| {
        burn::tensor::Device::wgpu_options()
            .graphics_api(api)
            .init()
            .map_err(|e| {
                format!(
                    "no usable {api:?} adapter: {e} (is a Vulkan driver installed? on Debian: \
                     apt-get install mesa-vulkan-drivers libvulkan1 for the software device)"
                )
            })
    })
    .clone()
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "vulkan") {
        v.push("vulkan");
    }
    if cfg!(feature = "tch") {
        v.push("tch");
    }
    v
}

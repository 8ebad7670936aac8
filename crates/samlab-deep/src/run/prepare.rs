//! Before a run writes anything: its data prepared, its config checked, its plan made.

use super::*;

/// The data of a run after the split and label noise.
pub struct PreparedData {
    /// Training split.
    pub train: ImageSet,
    /// Training labels used for training (noisy where noise was applied).
    pub train_labels: Vec<u16>,
    /// Whether each training example's label is noisy.
    pub train_noisy: Vec<bool>,
    /// Validation split (labels possibly noisy).
    pub val: ImageSet,
    /// Test set (clean).
    pub test: ImageSet,
    /// `(split, index, source_index, clean, noisy)` of every changed label.
    pub noise_records: Vec<[usize; 5]>,
}

impl PreparedData {
    /// The training examples of the eval-mode training metrics, in ascending order: the first `n` of a seeded
    /// permutation of the training split, and the first `n` noisy-label examples of the same permutation.
    pub fn eval_indices(&self, n: usize, seed: u64) -> [Vec<usize>; 2] {
        let order = Stream::new(seed, Purpose::EvalSubset, 0, 0).permutation(self.train.len());
        [false, true].map(|noisy_only| {
            let mut picked: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| !noisy_only || self.train_noisy[i])
                .take(n)
                .collect();
            picked.sort_unstable();
            picked
        })
    }

    /// The first `n` examples of `split` in file order, without augmentation, with the run's labels (the
    /// training labels, noisy where the run used label noise; the test set's clean ones): the examples of the
    /// analysis tools and of the run's curvature log alike.
    pub fn examples(
        &self,
        split: Split,
        n: usize,
        device: &burn::tensor::Device,
    ) -> Result<Batch, ConfigError> {
        let (set, labels, name) = match split {
            Split::Train => (&self.train, &self.train_labels, "training split"),
            Split::Test => (&self.test, &self.test.labels, "test set"),
        };
        if n == 0 || n > set.len() {
            return Err(ConfigError::Invalid {
                field: "examples",
                reason: format!("must be in 1..={} (the {name}'s size), got {n}", set.len()),
            });
        }
        let indices: Vec<usize> = (0..n).collect();
        Ok(Batch::unaugmented(set, labels, &indices, device))
    }
}

/// The Hessian's spectrum (and trace where `cfg` asks) at `state` on the first `cfg.examples` examples of
/// `cfg.split` of `data` ([`PreparedData::examples`]), cut into chunks of `cfg.m`: what `samlab hessian`
/// ([`crate::analysis::hessian::run_hessian`]) and the run's curvature log both compute, through this one function.
pub fn curvature_on(
    net: &Network,
    data: &PreparedData,
    state: &TrainState,
    cfg: &HessianConfig,
    device: &burn::tensor::Device,
) -> Result<Curvature, ConfigError> {
    let examples = data.examples(cfg.split, cfg.examples, device)?;
    curvature(net, state, &examples, cfg)
}

/// Loads the data set, splits off validation and applies label noise, all seeded by `seed`.
pub fn prepare_data(cfg: &DataConfig, seed: u64) -> Result<PreparedData, RunError> {
    let (mut full, test) = cfg.dataset.load(cfg.dir.as_deref())?;
    if test.is_empty() || full.is_empty() {
        return Err(DataError::Shape(format!(
            "need at least one training and one test image, got {} and {}",
            full.len(),
            test.len()
        ))
        .into());
    }
    if test.shape != full.shape {
        return Err(DataError::Shape(format!(
            "the test images are {:?} (channels, height, width) but the training images are {:?}",
            test.shape, full.shape
        ))
        .into());
    }
    if let Some(n) = cfg.train_limit {
        if n == 0 || n > full.len() {
            return Err(ConfigError::Invalid {
                field: "train_limit",
                reason: format!("must be in 1..={}, got {n}", full.len()),
            }
            .into());
        }
        full = full.select(&(0..n).collect::<Vec<_>>());
    }
    let (mut train, mut val, source) = split_validation(&full, cfg.val_fraction, seed)?;
    let clean_train = train.labels.clone();
    let mut train_noisy = vec![false; train.len()];
    let mut noise_records = Vec::new();
    if let Some(noise) = &cfg.label_noise {
        let idx = apply_label_noise(&mut train, noise, cfg.dataset, seed, 0)?;
        for &i in &idx {
            train_noisy[i] = true;
            noise_records.push([
                0,
                i,
                source[i],
                clean_train[i] as usize,
                train.labels[i] as usize,
            ]);
        }
        if cfg.noisy_val && !val.is_empty() {
            let clean_val = val.labels.clone();
            for i in apply_label_noise(&mut val, noise, cfg.dataset, seed, 1)? {
                noise_records.push([
                    1,
                    i,
                    usize::MAX,
                    clean_val[i] as usize,
                    val.labels[i] as usize,
                ]);
            }
        }
    }
    Ok(PreparedData {
        train_labels: train.labels.clone(),
        train,
        train_noisy,
        val,
        test,
        noise_records,
    })
}

/// Everything a run needs, checked.
pub(super) struct Plan {
    pub(super) net: Network,
    pub(super) data: PreparedData,
    pub(super) steps_per_epoch: usize,
    pub(super) total_steps: usize,
    pub(super) epochs: usize,
    pub(super) augment: Augment,
    pub(super) device: burn::tensor::Device,
    /// The eval-mode training metrics' subsets (with their training labels): all examples, noisy-label ones.
    pub(super) eval_subsets: [ImageSet; 2],
}

/// The model a run config describes, for its training images: what every checkpoint of the run must hold.
pub fn model_spec(model: &ModelConfig, train: &ImageSet) -> ModelSpec {
    ModelSpec {
        arch: model.arch,
        width: model.width.unwrap_or(model.arch.default_width()),
        norm: model.norm.unwrap_or(model.arch.default_norm()),
        input: train.shape,
        classes: train.classes,
        transformer: model.transformer.or(model.arch.default_transformer()),
    }
}

/// Reads the checkpoint at `path` and checks it holds exactly the tensors of `net` (the model of the run that
/// uses it), all finite: the one way every consumer (resume, fine-tuning, analysis) loads checkpoints.
pub fn load_checkpoint(path: &Path, net: &Network) -> Result<Checkpoint, RunError> {
    let ckpt = Checkpoint::load(path)?;
    ckpt.check_model(net, path)?;
    Ok(ckpt)
}

/// Makes `out` a run directory of `config` whose weights are the PyTorch `state_dict` in `file` (see
/// [`Checkpoint::from_state_dict`]): config.toml and checkpoint/last.ckpt, nothing trained. `sharpness`, `hessian`
/// and `interpolate` then read it like any run. An occupied `out` is replaced only with `force`.
pub fn import_state_dict(
    config: &DeepRunConfig,
    file: &Path,
    out: &Path,
    force: bool,
) -> Result<PathBuf, RunError> {
    // config.toml records training flags too: every one is checked as `train` checks it (a run of this
    // directory's config must be one samlab can start), along with the data and the model.
    let spec = plan(config)?.net.spec().clone();
    let ckpt = Checkpoint::from_state_dict(file, &spec)?;
    let writer = run_dir::RunDirWriter::create(out, force)?;
    let config_path = writer.path().join("config.toml");
    run_dir::write_toml(&config_path, config).map_err(io_err(&config_path))?;
    let dir = checkpoint_dir(writer.path());
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join("last.ckpt");
    ckpt.save(&path).map_err(io_err(&path))?;
    Ok(writer.commit()?)
}

/// The model and the number of updates `config` plans, its data read and checked as [`train`] would.
pub fn planned(config: &DeepRunConfig) -> Result<(ModelSpec, usize), RunError> {
    let p = plan(config)?;
    Ok((p.net.spec().clone(), p.total_steps))
}

/// Checks the values of `config` that need neither its data nor a device (counts, optimizer and SAM settings,
/// the curvature log): what [`train`] refuses before it reads anything.
pub fn check_config(config: &DeepRunConfig) -> Result<(), RunError> {
    let t = &config.train;
    let bad = |field, reason: String| RunError::Config(ConfigError::Invalid { field, reason });
    if t.epochs == 0 {
        return Err(bad("epochs", "must be at least 1".into()));
    }
    if t.batch_size == 0 || t.eval_batch_size == 0 {
        return Err(bad("batch_size", "must be at least 1".into()));
    }
    if t.max_steps == Some(0) {
        return Err(bad("max_steps", "must be at least 1".into()));
    }
    if !(t.optim.momentum.is_finite() && (0.0..1.0).contains(&t.optim.momentum)) {
        return Err(bad(
            "momentum",
            format!("must be in [0, 1), got {}", t.optim.momentum),
        ));
    }
    match t.optim.weight_decay {
        WeightDecay::L2 { lambda } | WeightDecay::Decoupled { lambda }
            if !(lambda.is_finite() && lambda >= 0.0) =>
        {
            return Err(bad(
                "weight_decay",
                format!("lambda must be finite and >= 0, got {lambda}"),
            ));
        }
        _ => {}
    }
    t.lr.check()?;
    crate::optim::check(&t.optim, &config.sam)?;
    let norm = config
        .model
        .norm
        .unwrap_or_else(|| config.model.arch.default_norm());
    config.sam.check_applies()?;
    crate::oracle::require_layers(&config.sam.check(t.batch_size)?, config.model.arch, norm)?;
    if t.curvature_every > 0 {
        if t.curvature_examples == 0 {
            return Err(bad(
                "curvature_examples",
                "must be at least 1 (they are the first examples of the training split)".into(),
            ));
        }
        if t.curvature_probes == 1 {
            return Err(bad(
                "curvature_probes",
                "the trace needs 0 (none) or at least 2 probes, got 1".into(),
            ));
        }
        crate::hessian::check_probes("curvature_probes", t.curvature_probes)?;
    }
    Ok(())
}

pub(super) fn plan(config: &DeepRunConfig) -> Result<Plan, RunError> {
    check_config(config)?;
    let t = &config.train;
    let bad = |field, reason: String| RunError::Config(ConfigError::Invalid { field, reason });
    let device = crate::device(&t.device)?;
    t.precision.check(&device)?;
    let data = prepare_data(&config.data, t.seed)?;
    let net = Network::new(&model_spec(&config.model, &data.train))?;
    let augment = config
        .data
        .augment
        .unwrap_or(config.data.dataset.default_augment());
    if let Augment::Crop { pad } | Augment::CropFlip { pad } = augment {
        let side = data.train.shape[1].max(data.train.shape[2]);
        if pad > side {
            return Err(bad(
                "pad",
                format!("must be at most the image side {side} (a larger pad crops nothing but zeros), got {pad}"),
            ));
        }
    }
    let steps_per_epoch = data.train.len() / t.batch_size;
    if steps_per_epoch == 0 {
        return Err(bad(
            "batch_size",
            format!(
                "{} is larger than the training split ({} images)",
                t.batch_size,
                data.train.len()
            ),
        ));
    }
    let total_steps = t
        .epochs
        .checked_mul(steps_per_epoch)
        .filter(|&n| u64::try_from(n).is_ok())
        .ok_or_else(|| {
            bad(
                "epochs",
                format!(
                    "{} epochs of {steps_per_epoch} steps is more updates than a 64-bit counter holds",
                    t.epochs
                ),
            )
        })?
        .min(t.max_steps.unwrap_or(usize::MAX));
    if t.curvature_every > 0 && t.curvature_examples > data.train.len() {
        return Err(bad(
            "curvature_examples",
            format!(
                "must be in 1..={} (the training split's size), got {}",
                data.train.len(),
                t.curvature_examples
            ),
        ));
    }
    let eval_subsets = data
        .eval_indices(t.eval_train_examples, t.seed)
        .map(|idx| data.train.select(&idx));
    Ok(Plan {
        epochs: total_steps.div_ceil(steps_per_epoch),
        augment,
        net,
        data,
        steps_per_epoch,
        total_steps,
        device,
        eval_subsets,
    })
}

/// The Hessian's top eigenvalue and trace (NaN without probes) at `state`, as [`TrainConfig::curvature_config`]
/// says: the first `curvature_examples` examples of the training split, as `samlab hessian` with the same settings
/// measures them (both NaN where the loss is not finite: the epoch's divergence check reports that).
pub(super) fn log_curvature(config: &DeepRunConfig, p: &Plan, state: &TrainState) -> (f64, f64) {
    match curvature_on(
        &p.net,
        &p.data,
        state,
        &config.train.curvature_config(),
        &p.device,
    ) {
        Ok(c) => (c.top(), c.trace.map_or(f64::NAN, |tr| tr.estimate)),
        Err(_) => (f64::NAN, f64::NAN),
    }
}

/// The training batch of update `step` (epoch `step / spe`, position `step % spe`).
pub(super) fn batch_at(config: &DeepRunConfig, p: &Plan, step: usize) -> Batch {
    let (epoch, b) = (step / p.steps_per_epoch, step % p.steps_per_epoch);
    let order = Stream::new(config.train.seed, Purpose::Shuffle, epoch as u64, 0)
        .permutation(p.data.train.len());
    let bs = config.train.batch_size;
    batch_from_order(config, p, &order, epoch, b, bs)
}

pub(super) fn batch_from_order(
    config: &DeepRunConfig,
    p: &Plan,
    order: &[usize],
    epoch: usize,
    b: usize,
    bs: usize,
) -> Batch {
    let indices = &order[b * bs..(b + 1) * bs];
    let mut stream = Stream::new(config.train.seed, Purpose::Augment, epoch as u64, b as u64);
    let (images, labels) = assemble(
        &p.data.train,
        &p.data.train_labels,
        indices,
        p.augment,
        &mut stream,
    );
    Batch::new(
        images,
        labels,
        p.data.train.shape,
        p.data.train.classes,
        &p.device,
    )
}

pub(super) fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Loads the last checkpoint of the run that `init_from` names for the run directory `out` to start from, checking
/// that `out` is not that run, that the checkpoint belongs to `net` and that it was written by a run of that
/// directory's config.toml.
pub(super) fn load_init(
    out: &Path,
    init_from: &Path,
    net: &Network,
) -> Result<Checkpoint, RunError> {
    run_dir::check_not_own_parent(out, init_from)?;
    let run = run_dir::resolve_init_from(out, init_from);
    let path = checkpoint_dir(&run).join("last.ckpt");
    let ckpt = load_checkpoint(&path, net)?;
    let text = run_dir::read_text(&run.join("config.toml")).map_err(|e| {
        RunError::Usage(format!(
            "{} (init_from of {}) is not a run directory: config.toml: {e}",
            run.display(),
            out.display()
        ))
    })?;
    check_config_sha256(&ckpt.progress, &text, &run, &path)?;
    Ok(ckpt)
}

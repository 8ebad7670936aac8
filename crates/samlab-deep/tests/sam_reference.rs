//! The SAM step of the burn trainer against an independent f64 reference.
//!
//! The reference re-implements SPEC section 1.3 from the formulas: a two-hidden-layer MLP (with or without
//! BatchNorm) evaluated in f64, gradients by central finite differences (no autodiff), the perturbation,
//! the descent gradient at the perturbed point, SGD with momentum and the BatchNorm running statistics. The
//! trainer computes in f32, so updates are compared with a relative tolerance of 2e-4 on the update vector (its
//! f32 rounding is about 1e-6; finite differences with h = 1e-5 in f64 are accurate to about 1e-9).

use burn::tensor::{Device, Tensor};
use samlab_core::ascent::{Ascent, Host, Oracle, Pass, VariantState};
use samlab_core::sam::{AscentSource, Grouping, Normalization, Perturbation, SamConfig, Variant};
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, NormKind, BN_MOMENTUM, NORM_EPS};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::trainer::{
    Batch, BnPolicy, OptimConfig, Precision, TrainState, Trainer, WeightDecay,
};

const SEED: u64 = 11;
const CLASSES: usize = 3;
const SIDE: usize = 8;
const HIDDEN: usize = 4;

fn device() -> Device {
    Device::default()
}

fn net(norm: NormKind) -> Network {
    Network::new(&ModelSpec {
        arch: Arch::Mlp,
        width: HIDDEN,
        norm,
        input: [1, SIDE, SIDE],
        classes: CLASSES,
        transformer: None,
    })
    .unwrap()
}

/// A batch of `n` random 8x8 images (values in [0, 1)) with labels, from the stream keyed by `key`.
fn data(n: usize, key: u64) -> (Vec<f32>, Vec<u16>) {
    let mut s = Stream::new(99, Purpose::Augment, key, 0);
    let images = (0..n * SIDE * SIDE).map(|_| s.uniform() as f32).collect();
    let labels = (0..n).map(|_| s.below(CLASSES) as u16).collect();
    (images, labels)
}

fn host(v: &[Tensor<1>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|t| {
            t.to_data()
                .try_into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------------------
// The reference, in f64.

#[derive(Clone, Copy, PartialEq)]
enum RefBn {
    /// Batch statistics; push them to the recorder.
    Batch,
    /// Running statistics.
    Running,
}

/// Mean and variance of one BatchNorm layer.
type LayerStats = (Vec<f64>, Vec<f64>);

#[derive(Clone)]
struct Reference {
    /// Parameter tensors in the network's order: fc1.w [64,4], fc1.b, (norm1.g, norm1.b), fc2.w [4,4], fc2.b,
    /// (norm2.g, norm2.b), head.w [4,3], head.b.
    bn: bool,
    /// Running mean and variance per BatchNorm layer.
    running: Vec<LayerStats>,
}

/// `x W + b` for row-major `x` `[n, din]` and `W` `[din, dout]`.
fn linear(x: &[f64], n: usize, w: &[f64], b: &[f64]) -> Vec<f64> {
    let dout = b.len();
    let din = w.len() / dout;
    let mut y = vec![0.0; n * dout];
    for i in 0..n {
        for o in 0..dout {
            let mut acc = b[o];
            for k in 0..din {
                acc += x[i * din + k] * w[k * dout + o];
            }
            y[i * dout + o] = acc;
        }
    }
    y
}

impl Reference {
    /// Mean cross-entropy on `(x, y)` at parameters `p`; BatchNorm batch statistics (mean, biased var, per layer)
    /// are returned too.
    fn loss(&self, p: &[Vec<f64>], x: &[f64], y: &[u16], mode: RefBn) -> (f64, Vec<LayerStats>) {
        let n = y.len();
        let mut stats = Vec::new();
        let mut h = x.to_vec();
        let mut i = 0;
        for layer in 0..2 {
            h = linear(&h, n, &p[i], &p[i + 1]);
            i += 2;
            let c = p[i - 1].len();
            if self.bn {
                let (g, b) = (&p[i], &p[i + 1]);
                i += 2;
                let (mean, var) = match mode {
                    RefBn::Batch => {
                        let mut mean = vec![0.0; c];
                        let mut var = vec![0.0; c];
                        for j in 0..c {
                            mean[j] = (0..n).map(|r| h[r * c + j]).sum::<f64>() / n as f64;
                            var[j] = (0..n)
                                .map(|r| (h[r * c + j] - mean[j]).powi(2))
                                .sum::<f64>()
                                / n as f64;
                        }
                        stats.push((mean.clone(), var.clone()));
                        (mean, var)
                    }
                    RefBn::Running => self.running[layer].clone(),
                };
                for r in 0..n {
                    for j in 0..c {
                        h[r * c + j] =
                            (h[r * c + j] - mean[j]) / (var[j] + NORM_EPS).sqrt() * g[j] + b[j];
                    }
                }
            }
            h.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        let logits = linear(&h, n, &p[i], &p[i + 1]);
        let mut loss = 0.0;
        for r in 0..n {
            let row = &logits[r * CLASSES..(r + 1) * CLASSES];
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            loss += lse - row[y[r] as usize];
        }
        (loss / n as f64, stats)
    }

    /// Gradient of `CE + lambda/2 ||p||^2` by central differences (h = 1e-5).
    fn grad(
        &self,
        p: &[Vec<f64>],
        x: &[f64],
        y: &[u16],
        mode: RefBn,
        lambda: f64,
    ) -> Vec<Vec<f64>> {
        let h = 1e-5;
        let mut q = p.to_vec();
        let mut g = p.to_vec();
        for t in 0..p.len() {
            for k in 0..p[t].len() {
                let orig = q[t][k];
                q[t][k] = orig + h;
                let up = self.loss(&q, x, y, mode).0;
                q[t][k] = orig - h;
                let down = self.loss(&q, x, y, mode).0;
                q[t][k] = orig;
                g[t][k] = (up - down) / (2.0 * h) + lambda * orig;
            }
        }
        g
    }

    /// Folds a pass's batch statistics into the running ones (momentum 0.1, unbiased variance).
    fn update_running(&mut self, stats: &[LayerStats], n: usize) {
        let m = BN_MOMENTUM;
        for (run, (mean, var)) in self.running.iter_mut().zip(stats) {
            for j in 0..mean.len() {
                run.0[j] = (1.0 - m) * run.0[j] + m * mean[j];
                run.1[j] = (1.0 - m) * run.1[j] + m * var[j] * n as f64 / (n - 1) as f64;
            }
        }
    }
}

fn norm(v: &[Vec<f64>]) -> f64 {
    v.iter().flatten().map(|x| x * x).sum::<f64>().sqrt()
}

fn add(a: &[Vec<f64>], s: f64, b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + s * q).collect())
        .collect()
}

/// Adds N(0, 0.05^2) noise to every parameter: the init's zero biases put ReLU inputs exactly at the kink
/// (an example whose first-layer units are all off gives second-layer inputs equal to the zero bias), where finite
/// differences see a slope of 1/2 and autodiff 0 or 1.
fn jitter(params: Vec<Tensor<1>>, dev: &Device) -> Vec<Tensor<1>> {
    let mut s = Stream::new(7, Purpose::Init, 77, 0);
    params
        .iter()
        .map(|t| {
            let v: Vec<f32> = t
                .to_data()
                .try_into_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| x + 0.05 * s.normal() as f32)
                .collect();
            let n = v.len();
            Tensor::from_data(burn::tensor::TensorData::new(v, [n]), dev)
        })
        .collect()
}

struct Case {
    sam: SamConfig,
    optim: OptimConfig,
    norm: NormKind,
    batch: usize,
    lr: f64,
    rho: f64,
    steps: usize,
}

/// Runs `case` through the trainer and through the reference and compares parameters, momentum and running
/// statistics after every step.
fn check(case: Case) {
    let dev = device();
    let network = net(case.norm);
    let params = jitter(init_params(network.params(), SEED, &dev), &dev);
    let mut state = TrainState::new(&network, params, &dev);
    let checked = case.sam.check(case.batch).unwrap();
    let trainer = Trainer {
        net: &network,
        sam: checked.clone(),
        optim: case.optim,
        seed: SEED,
        device: dev.clone(),
        precision: Precision::F32,
    };
    let lambda_l2 = match case.optim.weight_decay {
        WeightDecay::L2 { lambda } => lambda,
        _ => 0.0,
    };
    let mut reference = Reference {
        bn: case.norm == NormKind::Batch,
        running: vec![(vec![0.0; HIDDEN], vec![1.0; HIDDEN]); 2],
    };
    let mut w = host(&state.params);
    let mut vel: Vec<Vec<f64>> = w.iter().map(|t| vec![0.0; t.len()]).collect();
    let num_params: usize = w.iter().map(Vec::len).sum();
    let m = checked.group_size();
    let mut previous: Option<(Vec<f32>, Vec<u16>)> = None;
    for step in 0..case.steps {
        let (images, labels) = data(case.batch, step as u64);
        let prev = previous.clone().unwrap_or((images.clone(), labels.clone()));
        let batch = Batch::new(
            images.clone(),
            labels.clone(),
            [1, SIDE, SIDE],
            CLASSES,
            &dev,
        );
        let prev_batch = Batch::new(
            prev.0.clone(),
            prev.1.clone(),
            [1, SIDE, SIDE],
            CLASSES,
            &dev,
        );
        let out = trainer.step(
            &mut state,
            &batch,
            &prev_batch,
            case.lr,
            case.rho,
            step as u64,
        );
        assert!(out.finite);

        // Reference step.
        let x: Vec<f64> = images.iter().map(|&v| v as f64).collect();
        let xp: Vec<f64> = prev.0.iter().map(|&v| v as f64).collect();
        let d_in = SIDE * SIDE;
        let groups = case.batch / m;
        let mut accum: Vec<Vec<f64>> = w.iter().map(|t| vec![0.0; t.len()]).collect();
        let policy = case.optim.bn_policy;
        let train_mode = if policy == BnPolicy::Frozen {
            RefBn::Running
        } else {
            RefBn::Batch
        };
        for g in 0..groups {
            let (xs, ys) = (
                &x[g * m * d_in..(g + 1) * m * d_in],
                &labels[g * m..(g + 1) * m],
            );
            let (xa, ya) = match case.sam.ascent_source {
                AscentSource::SameBatch => (xs, ys),
                AscentSource::PreviousBatch => (
                    &xp[g * m * d_in..(g + 1) * m * d_in],
                    &prev.1[g * m..(g + 1) * m],
                ),
            };
            let noise = || {
                let mut s = Stream::new(SEED, Purpose::Perturb, step as u64, g as u64);
                w.iter()
                    .map(|t| s.normals_f32(t.len()).into_iter().map(f64::from).collect())
                    .collect::<Vec<Vec<f64>>>()
            };
            let mut clean_updated = false;
            let delta: Vec<Vec<f64>> = if case.rho == 0.0 {
                w.iter().map(|t| vec![0.0; t.len()]).collect()
            } else if case.sam.perturbation == Perturbation::Random {
                let z = noise();
                z.iter()
                    .map(|t| {
                        t.iter()
                            .map(|v| v * case.rho / (num_params as f64).sqrt())
                            .collect()
                    })
                    .collect()
            } else {
                let mut d: Vec<Vec<f64>> = if case.sam.random_init {
                    let z = noise();
                    let n = norm(&z);
                    z.iter()
                        .map(|t| t.iter().map(|v| v * case.rho / n).collect())
                        .collect()
                } else {
                    w.iter().map(|t| vec![0.0; t.len()]).collect()
                };
                let mut at_w = !case.sam.random_init;
                let eta = case.rho * case.sam.ascent_step_mult;
                for _ in 0..case.sam.ascent_steps {
                    let point = add(&w, 1.0, &d);
                    let h = reference.grad(&point, xa, ya, train_mode, lambda_l2);
                    let same = case.sam.ascent_source == AscentSource::SameBatch;
                    let update = match policy {
                        BnPolicy::BothPasses => true,
                        BnPolicy::CleanPassOnly => at_w && same,
                        BnPolicy::Frozen => false,
                    };
                    if update {
                        let stats = reference.loss(&point, xa, ya, RefBn::Batch).1;
                        reference.update_running(&stats, m);
                        clean_updated |= at_w && same;
                    }
                    let step_size = match case.sam.normalization {
                        Normalization::Normalized => eta / (norm(&h) + 1e-12),
                        _ => eta,
                    };
                    d = add(&d, step_size, &h);
                    if case.sam.normalization != Normalization::Unnormalized {
                        let n = norm(&d);
                        if n > case.rho {
                            d = d
                                .iter()
                                .map(|t| t.iter().map(|v| v * case.rho / n).collect())
                                .collect();
                        }
                    }
                    at_w = false;
                }
                d
            };
            if case.rho > 0.0 && policy == BnPolicy::CleanPassOnly && !clean_updated {
                let stats = reference.loss(&w, xs, ys, RefBn::Batch).1;
                reference.update_running(&stats, m);
            }
            let point = add(&w, 1.0, &delta);
            let gdesc = reference.grad(&point, xs, ys, train_mode, lambda_l2);
            let descent_updates = match policy {
                BnPolicy::BothPasses => true,
                BnPolicy::CleanPassOnly => case.rho == 0.0,
                BnPolicy::Frozen => false,
            };
            if descent_updates {
                let stats = reference.loss(&point, xs, ys, RefBn::Batch).1;
                reference.update_running(&stats, m);
            }
            accum = add(&accum, 1.0 / groups as f64, &gdesc);
        }
        vel = add(
            &vel.iter()
                .map(|t| t.iter().map(|v| v * case.optim.momentum).collect())
                .collect::<Vec<_>>(),
            1.0,
            &accum,
        );
        let w_new = match case.optim.weight_decay {
            WeightDecay::Decoupled { lambda } => w
                .iter()
                .zip(&vel)
                .map(|(p, v)| {
                    p.iter()
                        .zip(v)
                        .map(|(a, b)| a - case.lr * (b + lambda * a))
                        .collect()
                })
                .collect(),
            _ => add(&w, -case.lr, &vel),
        };

        // Compare the update w_new - w (not w itself, which would hide errors in the small update).
        let got = host(&state.params);
        let upd_ref: Vec<Vec<f64>> = add(&w_new, -1.0, &w);
        let upd_got: Vec<Vec<f64>> = add(&got, -1.0, &w);
        let err = norm(&add(&upd_got, -1.0, &upd_ref)) / norm(&upd_ref);
        assert!(
            err < 2e-4,
            "step {step}: relative error of the update {err:e} (|update| {:e})",
            norm(&upd_ref)
        );
        let verr = norm(&add(&host(&state.velocity), -1.0, &vel)) / norm(&vel);
        assert!(verr < 2e-4, "step {step}: momentum relative error {verr:e}");
        for (layer, (mean, var)) in reference.running.iter().enumerate() {
            if !reference.bn {
                break;
            }
            let gm = host(&state.bn.mean[layer..layer + 1])[0].clone();
            let gv = host(&state.bn.var[layer..layer + 1])[0].clone();
            for j in 0..HIDDEN {
                assert!(
                    (gm[j] - mean[j]).abs() < 1e-5 * (1.0 + mean[j].abs()),
                    "running mean {layer}/{j}: {} vs {}",
                    gm[j],
                    mean[j]
                );
                assert!(
                    (gv[j] - var[j]).abs() < 1e-5 * (1.0 + var[j].abs()),
                    "running var {layer}/{j}: {} vs {}",
                    gv[j],
                    var[j]
                );
            }
        }
        // Carry the trainer's own (f32) parameters forward so errors do not compound.
        w = got;
        vel = host(&state.velocity);
        previous = Some((images, labels));
    }
}

fn sam(rho_grouping: Grouping, normalization: Normalization) -> SamConfig {
    SamConfig {
        rho: 0.0,
        grouping: rho_grouping,
        normalization,
        ..SamConfig::default()
    }
}

fn optim(weight_decay: WeightDecay, bn_policy: BnPolicy) -> OptimConfig {
    OptimConfig {
        momentum: 0.9,
        weight_decay,
        bn_policy,
        optimizer: Default::default(),
    }
}

const L2: WeightDecay = WeightDecay::L2 { lambda: 5e-3 };

#[test]
fn normalized_sam_with_l2_in_the_ascent_matches_the_reference() {
    check(Case {
        sam: sam(Grouping::WholeBatch, Normalization::Normalized),
        optim: optim(L2, BnPolicy::BothPasses),
        norm: NormKind::None,
        batch: 6,
        lr: 0.5,
        rho: 0.3,
        steps: 3,
    });
}

#[test]
fn m_sam_with_batchnorm_in_both_passes_matches_the_reference() {
    check(Case {
        sam: sam(Grouping::Size(3), Normalization::Normalized),
        optim: optim(L2, BnPolicy::BothPasses),
        norm: NormKind::Batch,
        batch: 6,
        lr: 0.5,
        rho: 0.3,
        steps: 2,
    });
}

#[test]
fn batchnorm_clean_pass_only_and_frozen_do_what_they_say() {
    for policy in [BnPolicy::CleanPassOnly, BnPolicy::Frozen] {
        check(Case {
            sam: sam(Grouping::Size(4), Normalization::Normalized),
            optim: optim(WeightDecay::None, policy),
            norm: NormKind::Batch,
            batch: 8,
            lr: 0.5,
            rho: 0.3,
            steps: 2,
        });
    }
    // With the clean-pass policy and an ascent that never sees the clean micro-batch (previous batch), the extra
    // statistics pass must still update the running statistics exactly once per micro-batch.
    check(Case {
        sam: SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..sam(Grouping::Size(4), Normalization::Normalized)
        },
        optim: optim(WeightDecay::None, BnPolicy::CleanPassOnly),
        norm: NormKind::Batch,
        batch: 8,
        lr: 0.5,
        rho: 0.3,
        steps: 2,
    });
}

#[test]
fn multi_step_ascent_with_projection_matches_the_reference() {
    // Clipped (the code's "unnormalized"): rho * g steps, projected; rho large so the projection is active.
    check(Case {
        sam: SamConfig {
            ascent_steps: 3,
            ascent_step_mult: 0.7,
            ..sam(Grouping::Size(2), Normalization::Clipped)
        },
        optim: optim(L2, BnPolicy::BothPasses),
        norm: NormKind::None,
        batch: 4,
        lr: 0.3,
        rho: 2.0,
        steps: 2,
    });
    // Unnormalized (USAM): no projection.
    check(Case {
        sam: SamConfig {
            ascent_steps: 2,
            ..sam(Grouping::WholeBatch, Normalization::Unnormalized)
        },
        optim: optim(WeightDecay::None, BnPolicy::BothPasses),
        norm: NormKind::None,
        batch: 4,
        lr: 0.3,
        rho: 0.5,
        steps: 2,
    });
    // Normalized k-step ascent starting from a random point of the sphere.
    check(Case {
        sam: SamConfig {
            ascent_steps: 2,
            ascent_step_mult: 0.5,
            random_init: true,
            ..sam(Grouping::Size(2), Normalization::Normalized)
        },
        optim: optim(L2, BnPolicy::BothPasses),
        norm: NormKind::None,
        batch: 4,
        lr: 0.3,
        rho: 0.2,
        steps: 2,
    });
}

#[test]
fn previous_batch_random_perturbation_and_decoupled_decay_match_the_reference() {
    check(Case {
        sam: SamConfig {
            ascent_source: AscentSource::PreviousBatch,
            ..sam(Grouping::Size(2), Normalization::Normalized)
        },
        optim: optim(L2, BnPolicy::BothPasses),
        norm: NormKind::None,
        batch: 4,
        lr: 0.5,
        rho: 0.3,
        steps: 3,
    });
    check(Case {
        sam: SamConfig {
            perturbation: Perturbation::Random,
            ..sam(Grouping::Size(2), Normalization::Normalized)
        },
        optim: optim(
            WeightDecay::Decoupled { lambda: 0.05 },
            BnPolicy::BothPasses,
        ),
        norm: NormKind::None,
        batch: 4,
        lr: 0.5,
        rho: 3.0,
        steps: 2,
    });
}

/// Runs `steps` steps and returns every parameter's bits.
fn trajectory(sam: SamConfig, rho: f64, batch: usize, policy: BnPolicy) -> Vec<Vec<u32>> {
    let dev = device();
    let network = net(NormKind::Batch);
    let mut state = TrainState::new(&network, init_params(network.params(), SEED, &dev), &dev);
    let trainer = Trainer {
        net: &network,
        sam: sam.check(batch).unwrap(),
        optim: optim(L2, policy),
        seed: SEED,
        device: dev.clone(),
        precision: Precision::F32,
    };
    let mut prev = None;
    for step in 0..3 {
        let (images, labels) = data(batch, step);
        let b = Batch::new(images, labels, [1, SIDE, SIDE], CLASSES, &dev);
        let p: Batch = prev.clone().unwrap_or(b.clone());
        assert!(trainer.step(&mut state, &b, &p, 0.3, rho, step).finite);
        prev = Some(b);
    }
    state
        .params
        .iter()
        .chain(&state.bn.mean)
        .chain(&state.bn.var)
        .map(|t| {
            t.to_data()
                .try_into_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn rho_zero_is_erm_bit_for_bit_whatever_the_other_options() {
    for policy in [
        BnPolicy::BothPasses,
        BnPolicy::CleanPassOnly,
        BnPolicy::Frozen,
    ] {
        let erm = trajectory(
            SamConfig {
                grouping: Grouping::Size(4),
                ..SamConfig::erm()
            },
            0.0,
            8,
            policy,
        );
        for sam in [
            SamConfig {
                grouping: Grouping::Size(4),
                normalization: Normalization::Normalized,
                ..SamConfig::erm()
            },
            SamConfig {
                grouping: Grouping::Size(4),
                ascent_steps: 3,
                random_init: true,
                ..SamConfig::erm()
            },
            SamConfig {
                grouping: Grouping::Size(4),
                perturbation: Perturbation::Random,
                ..SamConfig::erm()
            },
            SamConfig {
                grouping: Grouping::Size(4),
                ascent_source: AscentSource::PreviousBatch,
                ..SamConfig::erm()
            },
        ] {
            assert_eq!(trajectory(sam, 0.0, 8, policy), erm, "{policy:?}");
        }
        // And SAM with rho > 0 really differs (the comparison can fail).
        let s = SamConfig {
            grouping: Grouping::Size(4),
            normalization: Normalization::Normalized,
            ..SamConfig::erm()
        };
        assert_ne!(trajectory(s, 0.1, 8, policy), erm);
    }
}

#[test]
fn m_sam_with_m_equal_to_the_batch_is_plain_sam() {
    let plain = SamConfig {
        normalization: Normalization::Normalized,
        ..SamConfig::erm()
    };
    let m_eq_b = SamConfig {
        grouping: Grouping::Size(8),
        ..plain.clone()
    };
    assert_eq!(
        trajectory(m_eq_b, 0.2, 8, BnPolicy::BothPasses),
        trajectory(plain.clone(), 0.2, 8, BnPolicy::BothPasses)
    );
    let m4 = SamConfig {
        grouping: Grouping::Size(4),
        ..plain.clone()
    };
    assert_ne!(
        trajectory(m4, 0.2, 8, BnPolicy::BothPasses),
        trajectory(plain, 0.2, 8, BnPolicy::BothPasses)
    );
}

#[test]
fn non_finite_losses_leave_the_state_untouched() {
    let dev = device();
    let network = net(NormKind::None);
    let mut state = TrainState::new(&network, init_params(network.params(), SEED, &dev), &dev);
    let trainer = Trainer {
        net: &network,
        sam: SamConfig::erm().check(4).unwrap(),
        optim: optim(WeightDecay::None, BnPolicy::BothPasses),
        seed: SEED,
        device: dev.clone(),
        precision: Precision::F32,
    };
    let (mut images, labels) = data(4, 0);
    images[5] = f32::NAN;
    let b = Batch::new(images, labels, [1, SIDE, SIDE], CLASSES, &dev);
    let before = host(&state.params);
    let out = trainer.step(&mut state, &b, &b, 0.1, 0.0, 0);
    assert!(!out.finite);
    assert_eq!(host(&state.params), before);
}

// ------------------------------------------------------------------------------------------------------------
// The SAM variants: the trainer's step (the rule of `samlab_core::ascent` on device tensors, its oracle choosing
// BatchNorm modes and scaled tensors) against the same rule on the f64 reference above (host vectors,
// finite-difference gradients). The rules themselves are pinned to NumPy on the diagonal net in samlab-core.

/// The reference MLP as an oracle over its flat parameters.
struct RefOracle<'a> {
    reference: &'a Reference,
    names: Vec<String>,
    sizes: Vec<usize>,
    x: &'a [f64],
    y: &'a [u16],
    mode: RefBn,
    velocity: Vec<f64>,
}

impl RefOracle<'_> {
    fn split(&self, flat: &[f64]) -> Vec<Vec<f64>> {
        let mut rest = flat;
        self.sizes
            .iter()
            .map(|&n| {
                let (head, tail) = rest.split_at(n);
                rest = tail;
                head.to_vec()
            })
            .collect()
    }

    fn rows(&self, rows: &[usize]) -> (Vec<f64>, Vec<u16>) {
        let d = SIDE * SIDE;
        let x = rows
            .iter()
            .flat_map(|&r| self.x[r * d..(r + 1) * d].iter().copied())
            .collect();
        (x, rows.iter().map(|&r| self.y[r]).collect())
    }

    /// `f(name)` for every coordinate, parameter by parameter.
    fn by_name(&self, f: impl Fn(&str) -> f64) -> Vec<f64> {
        self.names
            .iter()
            .zip(&self.sizes)
            .flat_map(|(name, &n)| std::iter::repeat_n(f(name), n))
            .collect()
    }
}

impl Oracle for RefOracle<'_> {
    type Space = Host;
    type Rng = Stream;

    fn gradient(
        &mut self,
        _: Pass,
        w: &Vec<f64>,
        rows: &[usize],
        scale: f64,
        out: &mut Vec<f64>,
    ) -> f64 {
        let (x, y) = self.rows(rows);
        let g = self.reference.grad(&self.split(w), &x, &y, self.mode, 0.0);
        let f = scale * rows.len() as f64;
        *out = g.iter().flatten().map(|g| f * g).collect();
        0.0
    }

    fn losses(&mut self, w: &Vec<f64>, rows: &[usize], out: &mut [f64]) {
        for (o, &r) in out.iter_mut().zip(rows) {
            let (x, y) = self.rows(&[r]);
            *o = self.reference.loss(&self.split(w), &x, &y, self.mode).0;
        }
    }

    fn descent_unit(&self, _: usize) -> f64 {
        1.0
    }

    fn num_params(&self) -> usize {
        self.sizes.iter().sum()
    }

    fn normal(&mut self, rng: &mut Stream, out: &mut Vec<f64>) {
        *out = self
            .sizes
            .iter()
            .flat_map(|&n| rng.normals_f32(n).into_iter().map(f64::from))
            .collect();
    }

    fn keep(&mut self, rng: &mut Stream, beta: f64) -> Vec<f64> {
        (0..self.num_params())
            .map(|_| if rng.uniform() < beta { 1.0 } else { 0.0 })
            .collect()
    }

    fn asam_scaling(&self, w: &Vec<f64>, eta: f64) -> Vec<f64> {
        let scaled = self.by_name(|name| f64::from(u8::from(name.contains("weight"))));
        w.iter()
            .zip(scaled)
            .map(|(w, s)| if s == 1.0 { w.abs() + eta } else { 1.0 })
            .collect()
    }

    fn momentum(&self) -> Option<&Vec<f64>> {
        Some(&self.velocity)
    }

    fn normalization_mask(&self) -> Option<Vec<f64>> {
        self.reference
            .bn
            .then(|| self.by_name(|name| f64::from(u8::from(name.starts_with("norm")))))
    }
}

/// Four steps of `variant` through the trainer and through the reference (BatchNorm frozen where there is one),
/// comparing each update and the gradient evaluations.
fn check_variant(variant: Variant, norm: NormKind) {
    const BATCH: usize = 6;
    let (lr, rho) = (0.05, 0.1);
    let dev = device();
    let network = net(norm);
    let params = jitter(init_params(network.params(), SEED, &dev), &dev);
    let mut state = TrainState::new(&network, params, &dev);
    let config = SamConfig {
        variant,
        ..sam(Grouping::WholeBatch, Normalization::Normalized)
    };
    let trainer = Trainer {
        net: &network,
        sam: config.check(BATCH).unwrap(),
        optim: optim(WeightDecay::None, BnPolicy::Frozen),
        seed: SEED,
        device: dev.clone(),
        precision: Precision::F32,
    };
    let reference = Reference {
        bn: norm == NormKind::Batch,
        running: vec![(vec![0.0; HIDDEN], vec![1.0; HIDDEN]); 2],
    };
    let names: Vec<String> = network.params().iter().map(|p| p.name.clone()).collect();
    let sizes: Vec<usize> = network.params().iter().map(|p| p.numel()).collect();
    let flat = |v: &[Tensor<1>]| -> Vec<f64> { host(v).concat() };
    let mut w = flat(&state.params);
    let mut velocity = vec![0.0; w.len()];
    let mut ascent = Ascent::<Host>::new(&w);
    let mut variant_state = VariantState::default();
    let rows: Vec<usize> = (0..BATCH).collect();
    for step in 0..4u64 {
        let (images, labels) = data(BATCH, step);
        let batch = Batch::new(
            images.clone(),
            labels.clone(),
            [1, SIDE, SIDE],
            CLASSES,
            &dev,
        );
        let out = trainer.step(&mut state, &batch, &batch, lr, rho, step);
        assert!(out.finite);
        let x: Vec<f64> = images.iter().map(|&v| f64::from(v)).collect();
        let mut oracle = RefOracle {
            reference: &reference,
            names: names.clone(),
            sizes: sizes.clone(),
            x: &x,
            y: &labels,
            mode: RefBn::Running,
            velocity: velocity.clone(),
        };
        let mut acc = vec![0.0; w.len()];
        let mut noise = Stream::new(SEED, Purpose::Perturb, step, 0);
        let evals = ascent.gradient_evals;
        ascent.group(
            &mut oracle,
            &config,
            rho,
            &w,
            &rows,
            &rows,
            &mut variant_state,
            &mut noise,
            &mut acc,
        );
        assert_eq!(
            out.gradient_evals,
            ascent.gradient_evals - evals,
            "{variant:?} step {step}: gradient evaluations"
        );
        for (v, a) in velocity.iter_mut().zip(&acc) {
            *v = 0.9 * *v + a;
        }
        let got = flat(&state.params);
        let update_ref: Vec<f64> = velocity.iter().map(|v| -lr * v).collect();
        let err = update_ref
            .iter()
            .zip(got.iter().zip(&w))
            .map(|(r, (g, w))| (g - w - r).powi(2))
            .sum::<f64>()
            .sqrt()
            / update_ref.iter().map(|r| r * r).sum::<f64>().sqrt();
        assert!(
            err < 2e-4,
            "{variant:?} step {step}: relative error of the update {err:e}"
        );
        // Carry the trainer's own (f32) state forward so errors do not compound.
        w = got;
        velocity = flat(&state.velocity);
    }
}

/// Every variant at options away from plain SAM's.
const MOVING: [Variant; 9] = [
    Variant::Asam { eta: 0.01 },
    Variant::Gsam { alpha: 0.3 },
    Variant::FisherSam { eta: 50.0 },
    Variant::Fsam {
        sigma: 0.5,
        lambda: 0.6,
    },
    Variant::Vasso { theta: 0.4 },
    Variant::LookSam { k: 2, alpha: 0.7 },
    Variant::Esam {
        beta: 0.5,
        gamma: 0.5,
    },
    Variant::Msam,
    Variant::SamOn,
];

#[test]
fn every_variant_step_matches_the_reference() {
    // Every variant of the table but plain SAM is here, in its order.
    let others = samlab_core::sam::VARIANTS.iter().skip(1);
    assert!(MOVING.iter().map(|v| v.label()).eq(others.map(|r| r.label)));
    for variant in MOVING {
        // ASAM scales weights (normalization scales included), not biases; SAM-ON perturbs only the normalization
        // layers: both on an MLP with BatchNorm.
        let norm = match variant {
            Variant::Asam { .. } | Variant::SamOn => NormKind::Batch,
            _ => NormKind::None,
        };
        check_variant(variant, norm);
    }
}

#[test]
fn variants_at_their_reducing_options_train_as_plain_sam_bit_for_bit() {
    let plain = SamConfig {
        normalization: Normalization::Normalized,
        ..SamConfig::erm()
    };
    let with = |variant| SamConfig {
        variant,
        ..plain.clone()
    };
    for policy in [BnPolicy::BothPasses, BnPolicy::CleanPassOnly] {
        let sam = trajectory(plain.clone(), 0.2, 8, policy);
        for v in samlab_core::ascent::reducing() {
            assert_eq!(trajectory(with(v), 0.2, 8, policy), sam, "{v:?} {policy:?}");
        }
        // ...and away from those options every variant moves off plain SAM.
        for v in MOVING {
            assert_ne!(trajectory(with(v), 0.2, 8, policy), sam, "{v:?} {policy:?}");
        }
    }
}

#[test]
fn looksam_and_msam_count_the_gradients_they_promise() {
    let dev = device();
    let network = net(NormKind::Batch);
    for (variant, per_ten) in [
        (Variant::Sam, 20),
        (Variant::LookSam { k: 5, alpha: 0.7 }, 12),
        (Variant::Msam, 10),
    ] {
        let mut state = TrainState::new(&network, init_params(network.params(), SEED, &dev), &dev);
        let trainer = Trainer {
            net: &network,
            sam: SamConfig {
                variant,
                ..sam(Grouping::WholeBatch, Normalization::Normalized)
            }
            .check(8)
            .unwrap(),
            optim: optim(WeightDecay::None, BnPolicy::BothPasses),
            seed: SEED,
            device: dev.clone(),
            precision: Precision::F32,
        };
        let mut evals = 0;
        for step in 0..10 {
            let (images, labels) = data(8, step);
            let b = Batch::new(images, labels, [1, SIDE, SIDE], CLASSES, &dev);
            evals += trainer
                .step(&mut state, &b, &b, 0.1, 0.1, step)
                .gradient_evals;
        }
        assert_eq!(evals, per_ten, "{variant:?}");
    }
}

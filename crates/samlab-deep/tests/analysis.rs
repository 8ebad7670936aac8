//! The analysis tools on tiny runs and networks: sharpness against its definition, interpolation endpoints and
//! BatchNorm re-estimation against direct computations, the Lanczos eigenvalues and the trace against a dense
//! Hessian.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use samlab_core::run::Quiet;
use samlab_core::spectral::SymmetricOperator;
use samlab_deep::analysis::hessian::{curvature, HessianConfig, HessianOperator};
use samlab_deep::analysis::interpolate::{
    interpolate, reestimate_bn, InterpolationConfig, InterpolationPoint,
};
use samlab_deep::analysis::sharpness::{
    project_ellipsoid, sharpness, weighted_norm, AscentTarget, Select, Sharpness, SharpnessConfig,
};
use samlab_deep::analysis::{chunks, BnEval, CheckpointKind, LoadedRun, Split};
use samlab_deep::data::Augment;
use samlab_deep::models::{Arch, ModelSpec, Network};
use samlab_deep::nn::{init_params, BnMode, BnStats, Ctx, NormKind};
use samlab_deep::rng::{Purpose, Stream};
use samlab_deep::run::{self, DeepRunConfig, RunError};
use samlab_deep::trainer::{batch_loss, cross_entropy, evaluate, Batch, TrainState};

/// Trains a two-hidden-layer MLP for two epochs on 360 images of the shipped Fashion-MNIST subset into `out`.
fn tiny_run(out: &Path, width: usize, norm: &str, seed: u64) -> LoadedRun {
    let text = format!(
        r#"
[model]
arch = "mlp"
width = {width}
norm = "{norm}"

[data]
dataset = "fashion-mnist"
train_limit = 400

[train]
epochs = 2
batch_size = 40
seed = {seed}
lr = 0.05

[train.optim]
momentum = 0.9
weight_decay = {{ kind = "none" }}
bn_policy = "both_passes"

[sam]
"#
    );
    let config: DeepRunConfig = toml::from_str(&text).unwrap();
    run::train(&config, out, false, &mut Quiet).unwrap();
    LoadedRun::load(out, CheckpointKind::Last).unwrap()
}

fn host(t: &Tensor<1>) -> Vec<f64> {
    t.to_data()
        .try_into_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn device_vec(v: &[f64], device: &Device) -> Tensor<1> {
    let values: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(values, [v.len()]), device)
}

fn measure(run: &LoadedRun, examples: &Batch, cfg: SharpnessConfig) -> Sharpness {
    sharpness(&run.net, &run.state, examples, &cfg).unwrap()
}

#[test]
fn worst_case_ascent_stays_in_the_ball_and_beats_one_step() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 8, "batch", 1);
    let examples = run.examples(Split::Train, 64).unwrap();
    for (bn, normalize) in [
        (BnEval::Batch, true),
        (BnEval::Running, true),
        (BnEval::Batch, false),
    ] {
        let rho = 0.5;
        let base = SharpnessConfig {
            rho,
            m: 32,
            bn,
            normalize,
            ..SharpnessConfig::default()
        };
        // 20 steps of 0.1 rho (or 2 rho times the raw gradient) would leave the ball without the projection.
        let many = measure(
            &run,
            &examples,
            SharpnessConfig {
                step_size_mult: if normalize { 0.1 } else { 2.0 },
                ..base.clone()
            },
        );
        let one = measure(
            &run,
            &examples,
            SharpnessConfig {
                steps: 1,
                step_size_mult: 1.0,
                ..base.clone()
            },
        );
        assert_eq!(many.chunks.len(), 2);
        assert!(
            many.max_delta_norm <= rho * (1.0 + 1e-5),
            "{bn:?} {normalize}: ||delta|| = {}",
            many.max_delta_norm
        );
        assert!(
            many.max_delta_norm >= 0.99 * rho,
            "the ascent reaches the sphere: {}",
            many.max_delta_norm
        );
        for (k, (m, o)) in many.chunks.iter().zip(&one.chunks).enumerate() {
            assert!(m.max_loss > m.loss, "{bn:?} chunk {k}: {m:?}");
            assert!(
                m.max_loss >= o.max_loss - 1e-6,
                "{bn:?} {normalize} chunk {k}: 20 steps {} < 1 step {}",
                m.max_loss,
                o.max_loss
            );
        }
        assert!(many.loss_increase > 0.0 && many.loss_increase >= one.loss_increase - 1e-6);
    }
    // Restarts keep the largest loss (or error): restart 0 is the same draw with 1 or 3 restarts.
    for (select, target) in [
        (Select::Loss, AscentTarget::Labels),
        (Select::Error, AscentTarget::Labels),
        (Select::Error, AscentTarget::RandomWrong),
    ] {
        let random = SharpnessConfig {
            rho: 0.5,
            m: 32,
            random_init: true,
            steps: 3,
            select,
            target,
            ..SharpnessConfig::default()
        };
        let r1 = measure(&run, &examples, random.clone());
        let r3 = measure(
            &run,
            &examples,
            SharpnessConfig {
                restarts: 3,
                ..random
            },
        );
        for (a, b) in r1.chunks.iter().zip(&r3.chunks) {
            match select {
                Select::Loss => assert!(b.max_loss >= a.max_loss, "{a:?} {b:?}"),
                Select::Error => assert!(b.error_at_max >= a.error_at_max, "{a:?} {b:?}"),
            }
        }
        assert!(r3.max_delta_norm <= 0.5 * (1.0 + 1e-5), "{r3:?}");
    }
}

/// One normalized step of size rho: loss(w + rho g / ||g||) - loss(w), with g and both losses computed here.
#[test]
fn one_normalized_step_equals_the_closed_form() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 8, "batch", 2);
    let examples = run.examples(Split::Test, 48).unwrap();
    let rho = 0.2;
    for bn in [BnEval::Batch, BnEval::Running] {
        let got = measure(
            &run,
            &examples,
            SharpnessConfig {
                rho,
                steps: 1,
                step_size_mult: 1.0,
                m: 24,
                bn,
                ..SharpnessConfig::default()
            },
        );
        let mode = match bn {
            BnEval::Batch => BnMode::Batch { update: false },
            BnEval::Running => BnMode::Running,
        };
        let loss_at = |params: &[Tensor<1>], chunk: &Batch| {
            let mut stats = run.state.bn.clone();
            let mut ctx = Ctx {
                params,
                mode,
                stats: &mut stats,
                tape: None,
                grouped: None,
            };
            let logits = run.net.forward(&mut ctx, chunk.x.clone());
            cross_entropy(logits, chunk.onehot.clone()).into_scalar::<f32>() as f64
        };
        for (c, chunk) in chunks(&examples, 24).unwrap().iter().enumerate() {
            let leaves: Vec<Tensor<1>> = run
                .state
                .params
                .iter()
                .map(|p| p.clone().autodiff().require_grad())
                .collect();
            let mut stats = run.state.bn.clone();
            let mut ctx = Ctx {
                params: &leaves,
                mode,
                stats: &mut stats,
                tape: None,
                grouped: None,
            };
            let loss = cross_entropy(
                run.net.forward(&mut ctx, chunk.x.clone()),
                chunk.onehot.clone(),
            );
            let grads = loss.backward();
            let g: Vec<Vec<f64>> = leaves
                .iter()
                .map(|l| host(&l.grad(&grads).unwrap()))
                .collect();
            let norm = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
            let moved: Vec<Tensor<1>> = run
                .state
                .params
                .iter()
                .zip(&g)
                .map(|(p, gi)| {
                    let w: Vec<f64> = host(p)
                        .iter()
                        .zip(gi)
                        .map(|(w, g)| w + rho * g / norm)
                        .collect();
                    device_vec(&w, &run.device)
                })
                .collect();
            let expected = loss_at(&moved, chunk) - loss_at(&run.state.params, chunk);
            let chunk_got = &got.chunks[c];
            let increase = chunk_got.max_loss - chunk_got.loss;
            assert!(
                (increase - expected).abs() <= 1e-4 * expected.abs() + 1e-6,
                "{bn:?} chunk {c}: {increase} vs {expected}"
            );
            assert!((chunk_got.delta_norm - rho).abs() < 1e-5 * rho);
        }
    }
}

/// Gradient of the mean cross-entropy of `chunk` against `onehot` at `params` (BatchNorm as `mode`), on the host.
fn grad_at(
    run: &LoadedRun,
    params: &[Tensor<1>],
    chunk: &Batch,
    onehot: Tensor<2>,
    mode: BnMode,
) -> Vec<Vec<f64>> {
    let leaves: Vec<Tensor<1>> = params
        .iter()
        .map(|p| p.clone().autodiff().require_grad())
        .collect();
    let mut stats = run.state.bn.clone();
    let mut ctx = Ctx {
        params: &leaves,
        mode,
        stats: &mut stats,
        tape: None,
        grouped: None,
    };
    let loss = cross_entropy(run.net.forward(&mut ctx, chunk.x.clone()), onehot);
    let grads = loss.backward();
    leaves
        .iter()
        .map(|l| host(&l.grad(&grads).unwrap()))
        .collect()
}

/// Mean cross-entropy of `chunk` (its own labels) at `params`.
fn loss_at(run: &LoadedRun, params: &[Tensor<1>], chunk: &Batch, mode: BnMode) -> f64 {
    let mut stats = run.state.bn.clone();
    let mut ctx = Ctx {
        params,
        mode,
        stats: &mut stats,
        tape: None,
        grouped: None,
    };
    let logits = run.net.forward(&mut ctx, chunk.x.clone());
    cross_entropy(logits, chunk.onehot.clone()).into_scalar::<f32>() as f64
}

/// One normalized adaptive step from 0: delta = rho (g * |w|) / ||g||, which lies on the ellipsoid
/// ||delta / |w||| = rho (no projection needed); and one step toward random wrong labels: delta = -rho g_t / ||g_t||
/// with g_t the gradient against labels drawn as the tool draws them. Both against losses computed here.
#[test]
fn adaptive_and_random_target_steps_equal_their_closed_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 8, "batch", 12);
    let examples = run.examples(Split::Test, 48).unwrap();
    let rho = 0.3;
    let classes = 10;
    for bn in [BnEval::Running, BnEval::Batch] {
        let mode = bn.mode();
        let one_step = SharpnessConfig {
            rho,
            steps: 1,
            step_size_mult: 1.0,
            m: 24,
            bn,
            ..SharpnessConfig::default()
        };
        let adaptive = measure(
            &run,
            &examples,
            SharpnessConfig {
                adaptive: true,
                ..one_step.clone()
            },
        );
        let targeted = measure(
            &run,
            &examples,
            SharpnessConfig {
                target: AscentTarget::RandomWrong,
                ..one_step.clone()
            },
        );
        let w: Vec<Vec<f64>> = run.state.params.iter().map(host).collect();
        for (c, chunk) in chunks(&examples, 24).unwrap().iter().enumerate() {
            let base = loss_at(&run, &run.state.params, chunk, mode);
            // Adaptive.
            let g = grad_at(&run, &run.state.params, chunk, chunk.onehot.clone(), mode);
            let norm = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
            let moved: Vec<Tensor<1>> = w
                .iter()
                .zip(&g)
                .map(|(wi, gi)| {
                    let v: Vec<f64> = wi
                        .iter()
                        .zip(gi)
                        .map(|(w, g)| w + rho * g * w.abs() / norm)
                        .collect();
                    device_vec(&v, &run.device)
                })
                .collect();
            let expected = loss_at(&run, &moved, chunk, mode) - base;
            let got = &adaptive.chunks[c];
            let increase = got.max_loss - got.loss;
            assert!(
                (increase - expected).abs() <= 1e-4 * expected.abs() + 1e-6,
                "{bn:?} adaptive chunk {c}: {increase} vs {expected}"
            );
            assert!(expected > 0.0, "{expected}");
            // The weighted norm of the step is rho (every weight of a trained net is nonzero).
            assert!((got.delta_norm - rho).abs() < 1e-4 * rho, "{got:?}");
            // Random wrong labels: uniform among the 9 other classes, keyed by (seed, restart 0, chunk).
            let mut stream = Stream::new(0, Purpose::Analysis, 2, c as u64);
            let mut onehot = vec![0.0f32; 24 * classes];
            for (i, &y) in chunk.labels.iter().enumerate() {
                let k = stream.below(classes - 1) as u16;
                let t = if k >= y { k + 1 } else { k };
                assert_ne!(t, y);
                onehot[i * classes + t as usize] = 1.0;
            }
            let onehot = Tensor::from_data(TensorData::new(onehot, [24, classes]), &run.device);
            let gt = grad_at(&run, &run.state.params, chunk, onehot, mode);
            let norm = gt.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
            let moved: Vec<Tensor<1>> = w
                .iter()
                .zip(&gt)
                .map(|(wi, gi)| {
                    let v: Vec<f64> = wi.iter().zip(gi).map(|(w, g)| w - rho * g / norm).collect();
                    device_vec(&v, &run.device)
                })
                .collect();
            let expected = loss_at(&run, &moved, chunk, mode) - base;
            let got = &targeted.chunks[c];
            let increase = got.max_loss - got.loss;
            assert!(
                (increase - expected).abs() <= 1e-4 * expected.abs() + 1e-6,
                "{bn:?} random-target chunk {c}: {increase} vs {expected}"
            );
            assert!((got.delta_norm - rho).abs() < 1e-5 * rho);
        }
    }
}

/// With every |w_i| equal to c the ellipsoid is the ball of radius rho c and the adaptive step is the plain step
/// of size c eta: adaptive sharpness at rho equals plain sharpness at rho c (20 steps, with and without random
/// starts: both draw the same noise). The projection onto an ellipsoid against a brute-force search in 2D.
#[test]
fn adaptive_sharpness_with_equal_weights_is_the_plain_one_and_projects_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 8, "batch", 13);
    let examples = run.examples(Split::Train, 64).unwrap();
    let c = 0.4;
    let params: Vec<Tensor<1>> = run
        .state
        .params
        .iter()
        .map(|p| {
            let v: Vec<f64> = host(p)
                .iter()
                .map(|&x| if x < 0.0 { -c } else { c })
                .collect();
            device_vec(&v, &run.device)
        })
        .collect();
    let state = TrainState {
        params,
        ..run.state.clone()
    };
    for (random_init, restarts) in [(false, 1), (true, 2)] {
        let cfg = SharpnessConfig {
            rho: 0.5,
            m: 32,
            random_init,
            restarts,
            select: Select::Loss,
            ..SharpnessConfig::default()
        };
        let adaptive = sharpness(
            &run.net,
            &state,
            &examples,
            &SharpnessConfig {
                adaptive: true,
                ..cfg.clone()
            },
        )
        .unwrap();
        let plain = sharpness(
            &run.net,
            &state,
            &examples,
            &SharpnessConfig {
                rho: 0.5 * c,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(plain.loss_increase > 1e-4, "{plain:?}");
        for (a, p) in adaptive.chunks.iter().zip(&plain.chunks) {
            assert!(
                (a.max_loss - p.max_loss).abs() <= 1e-4 * p.max_loss.abs(),
                "{random_init}: adaptive {a:?} plain {p:?}"
            );
            assert!(
                (a.delta_norm * c - p.delta_norm).abs() <= 1e-4 * p.delta_norm,
                "{a:?} {p:?}"
            );
        }
    }
    // Projection of (3, 1) onto x^2 / 4 + y^2 / 0.25 <= 1 (s = (2, 0.5), rho = 1): the nearest boundary point.
    let s = vec![vec![2.0], vec![0.5]];
    let d = vec![vec![3.0], vec![1.0]];
    let x = project_ellipsoid(&d, &s, 1.0);
    assert!((weighted_norm(&x, &s) - 1.0).abs() < 1e-8);
    let dist = |p: (f64, f64)| ((p.0 - 3.0).powi(2) + (p.1 - 1.0).powi(2)).sqrt();
    let best = (0..200_000)
        .map(|k| {
            let t = k as f64 / 200_000.0 * std::f64::consts::TAU;
            dist((2.0 * t.cos(), 0.5 * t.sin()))
        })
        .fold(f64::INFINITY, f64::min);
    assert!((dist((x[0][0], x[1][0])) - best).abs() < 1e-6, "{x:?}");
    // Inside points are left alone; a zero scale pins its coordinate to 0.
    assert_eq!(
        project_ellipsoid(&[vec![0.5, 0.1]], &[vec![2.0, 0.5]], 1.0),
        [vec![0.5, 0.1]]
    );
    let pinned = project_ellipsoid(&[vec![5.0, 1.0]], &[vec![0.0, 1.0]], 0.5);
    assert_eq!(pinned[0][0], 0.0);
    assert!((pinned[0][1] - 0.5).abs() < 1e-8);
}

#[test]
fn average_case_sharpness_vanishes_with_rho_and_grows_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 8, "none", 3);
    let examples = run.examples(Split::Train, 64).unwrap();
    let average = |rho: f64| {
        let cfg = SharpnessConfig {
            rho,
            steps: 1,
            m: 64,
            average_samples: Some(8),
            ..SharpnessConfig::default()
        };
        measure(&run, &examples, cfg).average.unwrap()
    };
    let tiny = average(1e-4);
    let large = average(20.0);
    assert!(tiny.loss_increase.abs() < 1e-5, "{tiny:?}");
    assert!(large.loss_increase > 1e-3, "{large:?}");
    assert_eq!(
        large.sigma,
        20.0 / (run.net.num_params() as f64).sqrt(),
        "sigma = rho / sqrt(P)"
    );
}

#[test]
fn bad_sharpness_settings_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path(), 4, "none", 4);
    let examples = run.examples(Split::Train, 40).unwrap();
    for cfg in [
        SharpnessConfig {
            rho: 0.0,
            m: 20,
            ..SharpnessConfig::default()
        },
        SharpnessConfig {
            steps: 0,
            m: 20,
            ..SharpnessConfig::default()
        },
        SharpnessConfig {
            m: 16,
            ..SharpnessConfig::default()
        },
        SharpnessConfig {
            restarts: 2,
            m: 20,
            ..SharpnessConfig::default()
        },
    ] {
        assert!(
            sharpness(&run.net, &run.state, &examples, &cfg).is_err(),
            "{cfg:?}"
        );
    }
    assert!(
        run.examples(Split::Train, 361).is_err(),
        "the split has 360"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = LoadedRun::load(empty.path(), CheckpointKind::Last)
        .err()
        .unwrap();
    assert!(
        err.is_bad_input() && err.to_string().contains("config.toml"),
        "{err}"
    );
    let err = LoadedRun::load(tmp.path(), CheckpointKind::Best).err();
    assert!(err.is_none(), "a run with a validation split has best.ckpt");
}

/// Cumulative-average BatchNorm statistics against the batch means and variances of the first layer's
/// pre-activations, computed here and weighted by batch size.
#[test]
fn interpolation_endpoints_and_bn_reestimation() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny_run(&tmp.path().join("a"), 8, "batch", 5);
    let b = tiny_run(&tmp.path().join("b"), 8, "batch", 6);
    // Three batches (128, 128, 44), weighted by their image counts as the authors' bn_update (128/300, 128/300,
    // 44/300; equal weights, 1/3 each, would miss by far more than the tolerance).
    let n = 300;
    let stats = reestimate_bn(
        &a.net,
        &a.state.params,
        &a.data.train,
        n,
        Augment::None,
        0,
        &a.device,
    );
    let (w1, b1) = (host(&a.state.params[0]), host(&a.state.params[1]));
    let (din, width) = (784, 8);
    let pre = |i: usize, j: usize| {
        let x = a.data.train.image(i);
        b1[j]
            + (0..din)
                .map(|k| x[k] as f64 / 255.0 * w1[k * width + j])
                .sum::<f64>()
    };
    let indices: Vec<usize> = (0..n).collect();
    for j in 0..width {
        let (mut mean, mut var) = (0.0, 0.0);
        let batches: Vec<&[usize]> = indices.chunks(128).collect();
        for batch in &batches {
            let v: Vec<f64> = batch.iter().map(|&i| pre(i, j)).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let weight = v.len() as f64 / n as f64;
            mean += m * weight;
            var += v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 * weight;
        }
        let (got_mean, got_var) = (host(&stats.mean[0])[j], host(&stats.var[0])[j]);
        assert!(
            (got_mean - mean).abs() < 1e-4 * (1.0 + mean.abs()),
            "{got_mean} vs {mean}"
        );
        assert!(
            (got_var - var).abs() < 1e-4 * (1.0 + var.abs()),
            "{got_var} vs {var}"
        );
    }

    let cfg = InterpolationConfig {
        from: -0.5,
        to: 1.5,
        step: 0.5,
        bn_examples: 200,
        examples: 40,
    };
    let curve = interpolate(&a, &b, &cfg).unwrap();
    let alphas: Vec<f64> = curve.points.iter().map(|p| p.alpha).collect();
    assert_eq!(alphas, [-0.5, 0.0, 0.5, 1.0, 1.5]);
    assert!(curve.bn_reestimated);
    let endpoint = |run: &LoadedRun| {
        let bn = reestimate_bn(
            &run.net,
            &run.state.params,
            &a.data.train,
            200,
            Augment::None,
            a.config.train.seed,
            &a.device,
        );
        let eval = |set: &samlab_deep::data::ImageSet, labels: &[u16]| {
            evaluate(
                &run.net,
                &run.state.params,
                &bn,
                set,
                &labels[..40],
                500,
                &a.device,
            )
        };
        let (train_loss, train_error) = eval(&a.data.train, &a.data.train_labels);
        let (test_loss, test_error) = eval(&a.data.test, &a.data.test.labels);
        (train_loss, train_error, test_loss, test_error)
    };
    let numbers = |p: &InterpolationPoint| (p.train_loss, p.train_error, p.test_loss, p.test_error);
    assert_eq!(numbers(&curve.summary.at_0), endpoint(&a));
    assert_eq!(numbers(&curve.summary.at_1), endpoint(&b));
    assert_ne!(numbers(&curve.summary.at_0), numbers(&curve.summary.at_1));
    let s = &curve.summary;
    assert!(s.train_loss_barrier >= 0.0 && s.max_train_loss_01 >= s.at_0.train_loss);
    assert!(curve
        .points
        .iter()
        .all(|p| p.test_error >= s.min_test_error));
}

#[test]
fn a_run_interpolated_with_itself_is_flat_and_other_models_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny_run(&tmp.path().join("a"), 8, "batch", 7);
    let cfg = InterpolationConfig {
        from: -1.0,
        to: 2.0,
        step: 1.0,
        bn_examples: 100,
        examples: 40,
    };
    let curve = interpolate(&a, &a, &cfg).unwrap();
    let first = curve.points[0];
    assert_eq!(curve.points.len(), 4);
    for p in &curve.points {
        assert!(
            (p.train_loss - first.train_loss).abs() < 1e-5,
            "{p:?} vs {first:?}"
        );
        assert!(
            (p.test_loss - first.test_loss).abs() < 1e-5,
            "{p:?} vs {first:?}"
        );
        assert_eq!(p.test_error, first.test_error);
    }
    assert!(curve.summary.train_loss_barrier.abs() < 1e-5);
    // The files `samlab interpolate` leaves, written by the library: the table, the whole result, the figure.
    let written = curve.write(&tmp.path().join("curve")).unwrap();
    let names: Vec<&str> = written
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "interpolation.csv",
            "interpolation.json",
            "interpolation.svg",
            "interpolation.png"
        ],
        "{:?}",
        written.figure_error
    );
    let csv = std::fs::read_to_string(&written.files[0]).unwrap();
    assert_eq!(csv.lines().count(), 1 + curve.points.len(), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&written.files[1]).unwrap()).unwrap();
    assert_eq!(json["points"].as_array().unwrap().len(), curve.points.len());
    for (width, norm) in [(6, "batch"), (8, "none")] {
        let other = tiny_run(&tmp.path().join(format!("{width}{norm}")), width, norm, 7);
        let err = interpolate(&a, &other, &cfg).unwrap_err();
        assert!(
            matches!(err, RunError::Usage(_)) && err.to_string().contains("different models"),
            "{err}"
        );
    }
}

// ------------------------------------------------------------------------------------------------------------
// Hessian.

/// All eigenvalues of a symmetric matrix (cyclic Jacobi rotations), with their eigenvectors as columns.
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (low, high) = a.split_at_mut(q);
                for (apk, aqk) in low[p].iter_mut().zip(high[0].iter_mut()) {
                    (*apk, *aqk) = (c * *apk - s * *aqk, s * *apk + c * *aqk);
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// The Lanczos eigenvalues and the Hutchinson trace against the dense Hessian built column by column from
/// Hessian-vector products (checked for symmetry, and its top eigenvector's curvature against second differences
/// of the loss).
#[test]
fn lanczos_matches_the_dense_hessian() {
    let device = Device::default();
    let (side, classes, n) = (4, 3, 24);
    let net = Network::new(&ModelSpec {
        arch: Arch::Mlp,
        width: 3,
        norm: NormKind::None,
        input: [1, side, side],
        classes,
        transformer: None,
    })
    .unwrap();
    let p = net.num_params();
    assert_eq!(p, 16 * 3 + 3 + 3 * 3 + 3 + 3 * 3 + 3);
    let mut s = Stream::new(5, Purpose::Augment, 0, 0);
    let images: Vec<f32> = (0..n * side * side).map(|_| s.uniform() as f32).collect();
    let labels: Vec<u16> = (0..n).map(|_| s.below(classes) as u16).collect();
    let examples = Batch::new(images, labels, [1, side, side], classes, &device);
    let state = TrainState::new(&net, init_params(net.params(), 9, &device), &device);
    let cfg = HessianConfig {
        m: 12,
        top_k: 3,
        max_steps: 80,
        tol: 1e-6,
        trace_probes: Some(300),
        ..HessianConfig::default()
    };
    let c = curvature(&net, &state, &examples, &cfg).unwrap();
    assert!(c.converged, "{c:?}");

    let op = HessianOperator::new(&net, &state, &examples, 12, BnEval::Batch, cfg.eps_rel).unwrap();
    let columns: Vec<Vec<f64>> = (0..p)
        .map(|i| {
            let mut e = vec![0.0; p];
            e[i] = 1.0;
            op.apply(&e)
        })
        .collect();
    let sizes: Vec<usize> = net.params().iter().map(|s| s.numel()).collect();
    let unflatten = |x: &[f64]| {
        let mut out = Vec::new();
        let mut at = 0;
        for &len in &sizes {
            out.push(device_vec(&x[at..at + len], &device));
            at += len;
        }
        out
    };
    let scale = columns.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
    let asym = (0..p)
        .flat_map(|i| (0..p).map(move |j| (i, j)))
        .map(|(i, j)| (columns[i][j] - columns[j][i]).abs())
        .fold(0.0, f64::max);
    // f64 differences of a kink-free function: symmetric to rounding (observed: 1e-10 of the largest entry).
    assert!(asym < 1e-7 * scale, "asymmetry {asym} of {scale}");
    let dense: Vec<Vec<f64>> = (0..p)
        .map(|i| {
            (0..p)
                .map(|j| 0.5 * (columns[i][j] + columns[j][i]))
                .collect()
        })
        .collect();
    let exact_trace: f64 = (0..p).map(|i| dense[i][i]).sum();
    let (values, vectors) = jacobi_eigen(dense);
    let mut sorted = values.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = (0..p)
        .max_by(|&i, &j| values[i].total_cmp(&values[j]))
        .unwrap();
    let lambda = values[k];
    assert!(lambda > 0.0, "{values:?}");
    for (got, want) in c.top_eigenvalues.iter().zip(&sorted) {
        assert!(
            (got.value - want).abs() <= 1e-6 * lambda,
            "Lanczos {got:?} vs dense {want}"
        );
    }
    let smallest = sorted[p - 1];
    assert!(
        (c.bottom_eigenvalue.value - smallest).abs()
            <= c.bottom_eigenvalue.residual + 1e-6 * lambda,
        "{:?} vs {smallest}",
        c.bottom_eigenvalue
    );
    let t = c.trace.as_ref().unwrap();
    assert!(
        (t.estimate - exact_trace).abs() <= 3.0 * t.std_error,
        "trace {} +- {} vs exact {exact_trace}",
        t.estimate,
        t.std_error
    );
    // Curvature along the top eigenvector from losses only: (L(w + t v) - 2 L(w) + L(w - t v)) / t^2.
    let v: Vec<f64> = vectors.iter().map(|row| row[k]).collect();
    let w: Vec<f64> = state.params.iter().flat_map(host).collect();
    let loss = |t: f64| {
        let moved: Vec<f64> = w.iter().zip(&v).map(|(w, v)| w + t * v).collect();
        let mut bn = BnStats::new(&[], &device);
        batch_loss(
            &net,
            &unflatten(&moved),
            &examples,
            BnMode::Running,
            &mut bn,
        )
        .0
    };
    let t = 0.05;
    let second = (loss(t) - 2.0 * loss(0.0) + loss(-t)) / (t * t);
    assert!(
        (second - lambda).abs() <= 0.03 * lambda,
        "second difference {second} vs {lambda}"
    );
}

/// The run's curvature log is `samlab hessian` with [`TrainConfig::curvature_config`]'s settings: its last value
/// is the analysis' top eigenvalue on the final checkpoint (the same examples, BatchNorm mode, loss and Lanczos
/// settings, through one function), and the log draws a curve (a value at every logged epoch).
#[test]
fn the_last_logged_curvature_is_the_final_analysis() {
    use samlab_core::run::RunConfig;
    use samlab_deep::analysis::hessian::run_hessian;

    let tmp = tempfile::tempdir().unwrap();
    let text = r#"
[model]
arch = "mlp"
width = 8
norm = "batch"

[data]
dataset = "fashion-mnist"
train_limit = 400

[train]
epochs = 3
batch_size = 40
seed = 3
lr = 0.05
eval_train_examples = 64
curvature_every = 1
curvature_examples = 256
curvature_probes = 0

[train.optim]
momentum = 0.9
weight_decay = { kind = "none" }
bn_policy = "both_passes"

[sam]
"#;
    let config: DeepRunConfig = toml::from_str(text).unwrap();
    // More curvature examples than the eval-mode subset: they are the training split's, not that subset's.
    assert!(config.train.curvature_examples > config.train.eval_train_examples);
    let cfg = config.train.curvature_config();
    assert_eq!(
        (cfg.examples, cfg.m, cfg.split, cfg.bn, cfg.trace_probes),
        (256, 128, Split::Train, BnEval::Batch, None)
    );
    assert_eq!(
        cfg,
        HessianConfig {
            examples: 256,
            ..HessianConfig::default()
        },
        "the log's Lanczos settings are the analysis' defaults"
    );
    let outcome = config.execute(tmp.path(), false, &mut Quiet).unwrap();
    let logged: Vec<f64> = outcome.rows.iter().map(|r| r.hessian_top).collect();
    assert_eq!(logged.len(), 3);
    assert!(
        logged.iter().all(|v| v.is_finite() && *v > 0.0),
        "{logged:?}"
    );
    let run = LoadedRun::load(tmp.path(), CheckpointKind::Last).unwrap();
    let analysis = run_hessian(&run, &cfg).unwrap().curvature;
    assert!(analysis.converged);
    let (last, top) = (logged[2], analysis.top());
    // The same computation on the same weights: equal to rounding, far inside the Lanczos tolerance.
    assert!(
        (last - top).abs() <= 1e-9 * top.abs(),
        "logged {last}, samlab hessian {top}"
    );
    // Other examples give another estimate: the comparison above is not of a value with itself.
    let other = run_hessian(
        &run,
        &HessianConfig {
            examples: 128,
            ..cfg.clone()
        },
    )
    .unwrap()
    .curvature
    .top();
    assert!((other - top).abs() > 1e-3 * top.abs(), "{other} vs {top}");
}

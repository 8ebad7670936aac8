use super::*;
use crate::relu::data::{twelve_points, TeacherStudent};
use crate::relu::metrics::{kinks, KinkTolerances};
use crate::relu::model::ReluInit;
use samlab_core::sam::{ActiveWindow, AscentSource, Grouping, Normalization, Perturbation};
use samlab_core::schedule::{LrShape, Warmup};

fn blanc(seed: u32) -> ReluNet {
    ReluNet::init(&ReluInit::Blanc { scale: 1.0 }, 100, 1, true, seed).unwrap()
}

fn config(lr: f64, iters: usize, sam: SamConfig) -> ReluTrainConfig {
    ReluTrainConfig {
        lr: LrSchedule::constant(lr),
        iters,
        batch_size: None,
        seed: 0,
        sam,
        loss: LossReduction::Sum,
        stop: None,
        log: LogSchedule::Ends,
    }
}

fn run(config: &ReluTrainConfig, init: ReluNet) -> ReluRun {
    train(&twelve_points(), config, init, &mut |_| true).unwrap()
}

fn normalized(rho: f64, grouping: Grouping) -> SamConfig {
    SamConfig {
        normalization: Normalization::Normalized,
        ..SamConfig::usam(rho, grouping)
    }
}

fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        ((got - want) / want).abs() <= tol,
        "{what}: got {got:e}, want {want:e}"
    );
}

/// `(train loss, sum of all parameters, updates, kinks)` from bench/relu_reference.py (independent NumPy).
fn check(r: &ReluRun, want: (f64, f64, usize, Option<usize>), tol: f64, what: &str) {
    assert_eq!(r.status, RunStatus::Ok, "{what}");
    assert_eq!(r.iterations, want.2, "{what}");
    assert_rel(r.curve.last().unwrap().train_loss, want.0, tol, what);
    assert_rel(r.net.params().iter().sum(), want.1, tol, what);
    if let Some(k) = want.3 {
        let x = crate::relu::data::twelve_point_inputs();
        let count = kinks(&r.net, x[0], x[11], &KinkTolerances::default())
            .unwrap()
            .len();
        assert_eq!(count, k, "{what}");
    }
}

#[test]
fn matches_numpy_reference() {
    let gd = run(&config(5e-5, 2000, SamConfig::erm()), blanc(0));
    check(
        &gd,
        (0.556814920209392, -13.36866605807694, 2000, Some(36)),
        1e-9,
        "gd",
    );

    let mut c = config(5e-5, 2000, normalized(0.3, Grouping::WholeBatch));
    c.lr.shape = LrShape::LinearDecay;
    let r = run(&c, blanc(0));
    check(
        &r,
        (1.259705756471614, -27.547916721439993, 2000, Some(41)),
        1e-9,
        "n-SAM",
    );

    let r = run(
        &config(5e-5, 2000, SamConfig::usam(1e-3, Grouping::Size(1))),
        blanc(0),
    );
    check(
        &r,
        (0.13441286211915485, -38.03874997045708, 2000, Some(41)),
        1e-9,
        "1-SAM",
    );

    let clipped = SamConfig {
        normalization: Normalization::Clipped,
        ascent_steps: 3,
        ascent_step_mult: 0.5,
        ..SamConfig::usam(0.05, Grouping::Size(4))
    };
    let r = run(&config(5e-5, 1000, clipped), blanc(0));
    check(
        &r,
        (8.503555526709784, -14.085289676458636, 1000, Some(41)),
        1e-9,
        "m-SAM",
    );

    let mut c = config(4e-4, 3000, SamConfig::erm());
    c.batch_size = Some(2);
    c.seed = 1;
    c.loss = LossReduction::Mean;
    c.lr.shape = LrShape::Step {
        at: vec![0.3],
        factors: vec![0.25],
    };
    c.lr.warmup = Warmup::Linear { steps: 100 };
    let r = run(&c, blanc(0));
    check(
        &r,
        (0.12432052084721737, -12.785756898184367, 3000, Some(42)),
        1e-9,
        "SGD",
    );

    let (data, _) = TeacherStudent::PAPER.generate().unwrap();
    let want_y = [
        0.20675061405725015,
        0.9886146789778149,
        -0.07221556570467469,
    ];
    for (got, want) in data.y_train.iter().zip(want_y) {
        assert_rel(*got, want, 1e-14, "teacher labels");
    }
    let student = ReluInit::Gaussian {
        w_scale: 0.5,
        a_scale: 0.0,
    };
    let mut c = config(0.26, 3000, SamConfig::erm());
    c.batch_size = Some(1);
    c.loss = LossReduction::Mean;
    let init = ReluNet::init(&student, 20, 2, false, 0).unwrap();
    let r = train(&data, &c, init, &mut |_| true).unwrap();
    check(
        &r,
        (0.00030924270161482206, 6.896177313121862, 3000, None),
        1e-9,
        "teacher-student",
    );
}

#[test]
fn stop_rules_match_numpy_reference() {
    let mut c = config(5e-5, 1_000_000, SamConfig::erm());
    c.stop = Some(StopRule {
        below: 0.5,
        on: StopOn::Clean,
    });
    let r = run(&c, blanc(0));
    assert!(r.stopped_early);
    check(
        &r,
        (0.4993833358613401, -13.39206700281953, 2139, Some(36)),
        1e-9,
        "gd stop",
    );
    // The notebook's SAM branch: stop on the loss at the perturbed point (here after ~1.3e5 updates).
    let mut c = config(5e-5, 1_000_000, normalized(0.3, Grouping::WholeBatch));
    c.stop = Some(StopRule {
        below: 2.0,
        on: StopOn::Descent,
    });
    let r = run(&c, blanc(0));
    check(
        &r,
        (0.08184375110674329, -153.79745833100526, 125101, Some(19)),
        1e-6,
        "n-SAM stop",
    );
}

/// One SAM step against a hand computation from the gradient kernel's definition: two neurons, three points.
#[test]
fn one_sam_step_by_hand() {
    let w = ndarray::Array2::from_shape_vec((2, 1), vec![1.0, -1.0]).unwrap();
    let net = ReluNet::from_parts(&w, &[0.5, 0.25], &[2.0, -1.0], true).unwrap();
    let data = samlab_core::data::Dataset {
        x_train: ndarray::Array2::from_shape_vec((3, 1), vec![-1.0, 0.0, 1.0]).unwrap(),
        y_train: ndarray::Array1::from(vec![0.0, 1.0, 2.0]),
        x_test: ndarray::Array2::zeros((1, 1)),
        y_test: ndarray::Array1::zeros(1),
    };
    // theta = (w1, w2, b1, b2, a1, a2); f(x) = a1 relu(w1 x + b1) + a2 relu(w2 x + b2).
    let grad = |th: [f64; 6]| -> [f64; 6] {
        let mut g = [0.0; 6];
        for (x, y) in [(-1.0, 0.0), (0.0, 1.0), (1.0, 2.0)] {
            let (p1, p2) = (th[0] * x + th[2], th[1] * x + th[3]);
            let r = th[4] * p1.max(0.0) + th[5] * p2.max(0.0) - y;
            let (m1, m2) = (f64::from(p1 > 0.0), f64::from(p2 > 0.0));
            let step = [
                r * th[4] * m1 * x,
                r * th[5] * m2 * x,
                r * th[4] * m1,
                r * th[5] * m2,
                r * p1.max(0.0),
                r * p2.max(0.0),
            ];
            for k in 0..6 {
                g[k] += step[k];
            }
        }
        g
    };
    let theta = [1.0, -1.0, 0.5, 0.25, 2.0, -1.0];
    let (rho, lr) = (0.1, 0.01);
    let g = grad(theta);
    let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut point = theta;
    for k in 0..6 {
        point[k] += rho * g[k] / gnorm;
    }
    let gp = grad(point);
    let want: Vec<f64> = (0..6).map(|k| theta[k] - lr * gp[k]).collect();
    let r = train(
        &data,
        &config(lr, 1, normalized(rho, Grouping::WholeBatch)),
        net,
        &mut |_| true,
    )
    .unwrap();
    for (got, want) in r.net.params().iter().zip(&want) {
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }
}

#[test]
fn degenerate_sam_settings_equal_their_simpler_twins_exactly() {
    let gd = run(&config(5e-5, 300, SamConfig::erm()), blanc(1));
    let zero = run(
        &config(5e-5, 300, normalized(0.0, Grouping::Size(1))),
        blanc(1),
    );
    assert_eq!(gd.net, zero.net);
    let closed = SamConfig {
        window: ActiveWindow {
            start: 1.0,
            end: 1.0,
        },
        ..normalized(0.3, Grouping::Size(3))
    };
    assert_eq!(run(&config(5e-5, 300, closed), blanc(1)).net, gd.net);
    let whole = run(
        &config(5e-5, 300, normalized(0.3, Grouping::WholeBatch)),
        blanc(1),
    );
    let m_is_n = run(
        &config(5e-5, 300, normalized(0.3, Grouping::Size(12))),
        blanc(1),
    );
    assert_eq!(whole.net, m_is_n.net);
    assert_ne!(whole.net, gd.net);
}

/// The variants run on the ReLU net through the same oracle: at their reducing options they train exactly as
/// plain normalized SAM (full batch, mini-batches, groups of 3), and otherwise differ from it; a network without
/// biases keeps its bias block at 0 under every variant.
#[test]
fn variants_at_their_reducing_options_are_plain_sam_exactly() {
    use samlab_core::sam::Variant;
    let moving = [
        Variant::Asam { eta: 0.01 },
        Variant::Gsam { alpha: 0.3 },
        Variant::FisherSam { eta: 10.0 },
        Variant::Fsam {
            sigma: 1.0,
            lambda: 0.6,
        },
        Variant::Vasso { theta: 0.4 },
        Variant::LookSam { k: 3, alpha: 0.7 },
        Variant::Esam {
            beta: 0.6,
            gamma: 0.5,
        },
    ];
    // Every variant the analytic engines run but plain SAM, in the table's order.
    let analytic = samlab_core::sam::VARIANTS
        .iter()
        .filter(|r| r.needs == samlab_core::sam::Needs::Gradients && r.default != Variant::Sam);
    assert!(moving
        .iter()
        .map(|v| v.label())
        .eq(analytic.map(|r| r.label)));
    for batch_size in [None, Some(6)] {
        for grouping in [Grouping::WholeBatch, Grouping::Size(3)] {
            let sam = |variant| SamConfig {
                variant,
                ..normalized(0.3, grouping)
            };
            let train_with = |variant, bias| {
                let mut c = config(5e-5, 200, sam(variant));
                c.batch_size = batch_size;
                let init = ReluNet::init(&ReluInit::Blanc { scale: 1.0 }, 100, 1, bias, 1).unwrap();
                train(&twelve_points(), &c, init, &mut |_| true)
            };
            let plain = train_with(Variant::Sam, true).unwrap();
            for v in samlab_core::ascent::reducing() {
                match train_with(v, true) {
                    Ok(r) => assert_eq!(r.net, plain.net, "{v:?} {grouping:?} {batch_size:?}"),
                    Err(e) => assert!(
                        v.is_stateful() && grouping != Grouping::WholeBatch,
                        "{v:?}: {e}"
                    ),
                }
            }
            for v in moving {
                let full_batch_selection = matches!(v, Variant::Esam { .. })
                    && batch_size.is_none()
                    && grouping == Grouping::WholeBatch;
                let Ok(r) = train_with(v, false) else {
                    assert!(
                        full_batch_selection
                            || (v.is_stateful() && grouping != Grouping::WholeBatch),
                        "{v:?} refused"
                    );
                    continue;
                };
                assert!(
                    r.net.biases().iter().all(|&b| b == 0.0),
                    "{v:?}: biases moved"
                );
                assert_ne!(train_with(v, true).unwrap().net, plain.net, "{v:?}");
            }
        }
    }
}

#[test]
fn runs_are_deterministic_and_seeded() {
    let sgd = |seed, random| {
        let sam = SamConfig {
            perturbation: if random {
                Perturbation::Random
            } else {
                Perturbation::Ascent
            },
            random_init: !random,
            ascent_steps: 2,
            ..normalized(0.1, Grouping::Size(2))
        };
        let mut c = config(1e-4, 500, sam);
        c.batch_size = Some(4);
        c.seed = seed;
        run(&c, blanc(2))
    };
    for random in [false, true] {
        let a = sgd(3, random);
        assert_eq!(a.net, sgd(3, random).net);
        assert_ne!(a.net, sgd(4, random).net);
        assert_eq!(a.status, RunStatus::Ok);
    }
    let prev = SamConfig {
        ascent_source: AscentSource::PreviousBatch,
        ..normalized(0.1, Grouping::WholeBatch)
    };
    let mut c = config(1e-4, 200, prev);
    c.batch_size = Some(3);
    let mut same = c.clone();
    same.sam.ascent_source = AscentSource::SameBatch;
    assert_ne!(run(&c, blanc(0)).net, run(&same, blanc(0)).net);
}

#[test]
fn divergence_is_a_status_with_the_curve_and_last_finite_network_kept() {
    let mut c = config(0.05, 10_000, SamConfig::erm());
    c.log = LogSchedule::Notebook;
    let r = run(&c, blanc(0));
    assert_eq!(r.status, RunStatus::Diverged);
    assert!(r.iterations < 10_000);
    assert!(r.net.is_finite());
    assert!(!r.curve.is_empty());
    assert!(r.curve.iter().all(|p| p.train_loss.is_finite()));
}

#[test]
fn observer_sees_every_update_and_logs_end_at_the_stop() {
    let mut seen = vec![];
    let mut c = config(1e-5, 100, SamConfig::erm());
    c.lr.shape = LrShape::LinearDecay;
    c.log = LogSchedule::Notebook;
    let r = train(&twelve_points(), &c, blanc(0), &mut |v| {
        seen.push((v.t, v.lr, v.batch.len()));
        true
    })
    .unwrap();
    assert_eq!(seen.len(), 100);
    assert_eq!((seen[10].0, seen[10].2), (10, 12));
    assert!((seen[10].1 - 0.9e-5).abs() < 1e-20);
    assert_eq!(r.curve.len(), 101);
    assert_eq!(r.curve.last().unwrap().iteration, 100);
    assert!(!r.stopped_early);
}

#[test]
fn bad_settings_are_rejected() {
    let data = twelve_points();
    let c = config(-1.0, 10, SamConfig::erm());
    assert!(train(&data, &c, blanc(0), &mut |_| true)
        .unwrap_err()
        .to_string()
        .contains("lr"));
    let c = config(0.1, 10, SamConfig::usam(0.1, Grouping::Size(5)));
    assert!(train(&data, &c, blanc(0), &mut |_| true)
        .unwrap_err()
        .to_string()
        .contains("divide"));
    let two_d = ReluNet::init(&ReluInit::He, 4, 2, true, 0).unwrap();
    let c = config(0.1, 10, SamConfig::erm());
    assert!(train(&data, &c, two_d, &mut |_| true).is_err());
    let mut c = config(0.1, 10, SamConfig::erm());
    c.stop = Some(StopRule {
        below: f64::NAN,
        on: StopOn::Clean,
    });
    assert!(train(&data, &c, blanc(0), &mut |_| true).is_err());
}

/// What SAM did at the first step, against an independent computation on finite-difference gradients of the
/// network's predictions: the mean over the groups of ||delta||, the cosine between the clean and the SAM
/// gradient, and the realised sharpness of the group's mean loss; summed and mean losses, 1-SAM and groups.
#[test]
fn observations_match_finite_differences() {
    let data = twelve_points();
    let init = ReluNet::init(&ReluInit::Blanc { scale: 1.0 }, 6, 1, true, 4).unwrap();
    let loss_i = |i: usize, theta: &[f64]| {
        let mut net = init.clone();
        net.theta.copy_from_slice(theta);
        let r = net.predict(&[data.x_train[[i, 0]]])[0] - data.y_train[i];
        0.5 * r * r
    };
    let sum_loss = |rows: &[usize], w: &[f64]| rows.iter().map(|&i| loss_i(i, w)).sum::<f64>();
    let grad = |rows: &[usize], w: &[f64], factor: f64| -> Vec<f64> {
        crate::central_difference(|w| factor * sum_loss(rows, w), w, 1e-6)
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let rows: Vec<usize> = (0..12).collect();
    for (m, normalization, reduction, rho) in [
        (1, Normalization::Unnormalized, LossReduction::Sum, 1e-3),
        (12, Normalization::Normalized, LossReduction::Sum, 0.05),
        (3, Normalization::Normalized, LossReduction::Mean, 0.05),
        (4, Normalization::Unnormalized, LossReduction::Mean, 1e-2),
    ] {
        let w = init.theta.clone();
        let (mut delta, mut cos, mut sharpness) = (0.0, vec![], 0.0);
        for group in rows.chunks(m) {
            // The ascent follows the gradient of the group's objective (a sum or a mean).
            let g = grad(group, &w, reduction.factor(group.len()));
            let scale = match normalization {
                Normalization::Normalized => rho / dot(&g, &g).sqrt(),
                _ => rho,
            };
            let perturbed: Vec<f64> = w.iter().zip(&g).map(|(w, g)| w + scale * g).collect();
            let gp = grad(group, &perturbed, 1.0);
            delta += scale * dot(&g, &g).sqrt();
            // An example where every neuron is off has no gradient, and no cosine.
            if dot(&g, &g) > 0.0 {
                cos.push(dot(&g, &gp) / (dot(&g, &g) * dot(&gp, &gp)).sqrt());
            }
            sharpness += (sum_loss(group, &perturbed) - sum_loss(group, &w)) / group.len() as f64;
        }
        let groups = (12 / m) as f64;
        let mut c = config(
            1e-4,
            1,
            SamConfig {
                normalization,
                ..SamConfig::usam(rho, Grouping::Size(m))
            },
        );
        c.loss = reduction;
        let r = run(&c, init.clone());
        let o = r.curve[0].sam;
        let what = format!("m = {m}, {normalization:?}, {reduction:?}: {o:?}");
        assert_rel(o.weight_norm, dot(&w, &w).sqrt(), 1e-14, &what);
        assert_rel(o.delta_norm, delta / groups, 1e-6, &what);
        assert_rel(
            o.grad_cos,
            cos.iter().sum::<f64>() / cos.len() as f64,
            1e-6,
            &what,
        );
        assert_rel(o.sharpness, sharpness / groups, 1e-9, &what);
        assert!(o.grad_cos < 0.99999 && o.sharpness > 0.0, "{what}");
        assert!(r.curve[1].sam.is_absent(), "{what}");
    }
}

/// Observing the logged steps changes no bit of training (the notebook's schedule against the ends only); ERM
/// observes nothing, SAM every logged step but the last.
#[test]
fn observing_changes_no_bit_of_training() {
    for sam in [
        SamConfig::erm(),
        normalized(0.05, Grouping::WholeBatch),
        SamConfig::usam(1e-4, Grouping::Size(1)),
        normalized(0.05, Grouping::Size(4)),
    ] {
        let train_with = |log| {
            let mut c = config(1e-4, 1000, sam.clone());
            c.log = log;
            run(&c, blanc(1))
        };
        let (dense, ends) = (
            train_with(LogSchedule::Notebook),
            train_with(LogSchedule::Ends),
        );
        assert_eq!(dense.status, RunStatus::Ok, "{sam:?}");
        assert_eq!(dense.net, ends.net, "{sam:?}");
        assert!(dense.curve.len() > 500);
        assert!(dense.curve.last().unwrap().sam.is_absent());
        let measured = dense.curve.iter().filter(|p| !p.sam.is_absent()).count();
        let expected = if sam.rho == 0.0 {
            0
        } else {
            dense.curve.len() - 1
        };
        assert_eq!(measured, expected, "{sam:?}");
    }
}

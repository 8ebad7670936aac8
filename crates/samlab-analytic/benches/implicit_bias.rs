//! The implicit-bias solver on d = 100, n = 40 (issue target: under 10 ms), and the min-l1 LP beside it.

use criterion::{criterion_group, criterion_main, Criterion};
use samlab_analytic::theory::interpolators::{min_entropy, min_l1};
use samlab_core::data::SparseRegression;
use samlab_core::linalg::Matrix;

fn bench(c: &mut Criterion) {
    let spec = SparseRegression {
        n: 40,
        d: 100,
        r: 5,
        n_test: 1,
        seed: 0,
    };
    let (data, _) = spec.generate().unwrap();
    let x = Matrix::from_array(&data.x_train);
    let y = data.y_train.to_vec();
    for alpha in [0.1, 0.01, 1e-4] {
        let a = vec![alpha; 100];
        c.bench_function(&format!("min_entropy d=100 n=40 alpha={alpha}"), |b| {
            b.iter(|| min_entropy(&x, &y, &a).unwrap())
        });
    }
    // A non-uniform scale, as after SAM: alpha_j in [0.001, 0.1].
    let mixed: Vec<f64> = (0..100)
        .map(|j| 0.1 * 0.01f64.powf(j as f64 / 99.0))
        .collect();
    c.bench_function("min_entropy d=100 n=40 alpha in [1e-3, 0.1]", |b| {
        b.iter(|| min_entropy(&x, &y, &mixed).unwrap())
    });
    c.bench_function("min_l1 d=100 n=40 (LP)", |b| {
        b.iter(|| min_l1(&x, &y).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);

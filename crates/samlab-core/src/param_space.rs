//! The parameter space the SAM step works in: the few vector operations [`crate::ascent`] needs, for the host's
//! flat `f64` vectors ([`Host`]) here and for a device's tensors in the deep-net engine.

/// Vector operations over one kind of parameter vector. Every reduction ([`Space::dot`]) returns an `f64` on the
/// host; everything else stays where the vectors live.
pub trait Space {
    /// A parameter vector (or anything shaped like one: gradients, perturbations, momenta).
    type Vector: Clone;

    /// $a \cdot b$.
    fn dot(a: &Self::Vector, b: &Self::Vector) -> f64;
    /// $\lVert a \rVert_2$.
    fn norm(a: &Self::Vector) -> f64 {
        Self::dot(a, a).sqrt()
    }
    /// `y += a * x`.
    fn axpy(y: &mut Self::Vector, a: f64, x: &Self::Vector);
    /// `y = a * x`.
    fn set_scaled(y: &mut Self::Vector, a: f64, x: &Self::Vector);
    /// `y = a * y + b * x`.
    fn blend(y: &mut Self::Vector, a: f64, b: f64, x: &Self::Vector);
    /// `y *= a`.
    fn scale(y: &mut Self::Vector, a: f64);
    /// `y = a + b`.
    fn set_sum(y: &mut Self::Vector, a: &Self::Vector, b: &Self::Vector);
    /// `y *= x` coordinate by coordinate.
    fn mul(y: &mut Self::Vector, x: &Self::Vector);
    /// $F^{-1} g$ for the diagonal empirical Fisher $F = 1 + \eta\, g^2$ (Fisher-SAM).
    fn inverse_fisher(g: &Self::Vector, eta: f64) -> Self::Vector;
}

/// Flat `f64` vectors in host memory (the analytic engines).
pub struct Host;

impl Space for Host {
    type Vector = Vec<f64>;

    fn dot(a: &Vec<f64>, b: &Vec<f64>) -> f64 {
        crate::linalg::dot(a, b)
    }

    fn axpy(y: &mut Vec<f64>, a: f64, x: &Vec<f64>) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }

    fn set_scaled(y: &mut Vec<f64>, a: f64, x: &Vec<f64>) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = a * x;
        }
    }

    fn blend(y: &mut Vec<f64>, a: f64, b: f64, x: &Vec<f64>) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = a * *y + b * x;
        }
    }

    fn scale(y: &mut Vec<f64>, a: f64) {
        y.iter_mut().for_each(|y| *y *= a);
    }

    fn set_sum(y: &mut Vec<f64>, a: &Vec<f64>, b: &Vec<f64>) {
        for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
            *y = a + b;
        }
    }

    fn mul(y: &mut Vec<f64>, x: &Vec<f64>) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y *= x;
        }
    }

    fn inverse_fisher(g: &Vec<f64>, eta: f64) -> Vec<f64> {
        g.iter().map(|g| g / (1.0 + eta * g * g)).collect()
    }
}

//! The hyperbolic entropy: the implicit bias of diagonal linear networks (Woodworth et al.; paper Theorem 1).

/// The talk's potential $q(z) = 2 - \sqrt{4 + z^2} + z \operatorname{arcsinh}(z/2)$, with $q'(z) = \operatorname{arcsinh}(z/2)$.
pub fn q(z: f64) -> f64 {
    2.0 - (4.0 + z * z).sqrt() + z * (z / 2.0).asinh()
}

/// The talk's form $\phi_\alpha(\beta) = \alpha \sum_i q(\beta_i / \alpha^2)$ for a scalar $\alpha > 0$.
pub fn phi_talk(beta: &[f64], alpha: f64) -> f64 {
    alpha * beta.iter().map(|b| q(b / (alpha * alpha))).sum::<f64>()
}

/// The hyperbolic entropy in the $u \odot v$ parametrization with per-coordinate scale $a$ (for $u_0 = a$,
/// $v_0 = 0$, or $a = \alpha_{\mathrm{eff}}$ after SAM):
///
/// $$\phi_a(\beta) = \sum_j \Big[\beta_j \operatorname{arcsinh}\frac{2\beta_j}{a_j^2} - \sqrt{\beta_j^2 + a_j^4/4} + \frac{a_j^2}{2}\Big],$$
///
/// whose gradient is $\operatorname{arcsinh}(2\beta/a^2)$. It equals $\frac{a}{2}\,$[`phi_talk`]$(\beta, a/2)$ for a
/// scalar $a$, tends to $\lVert\beta\rVert_2^2/a^2$ for large $a$ and to $\lVert\beta\rVert_1 \log(1/a^2)$ for small.
pub fn phi(beta: &[f64], a: &[f64]) -> f64 {
    beta.iter()
        .zip(a)
        .map(|(&b, &a)| {
            let a2 = a * a;
            // a^2/2 - sqrt(b^2 + a^4/4), written without cancellation for large a.
            b * (2.0 * b / a2).asinh() - b * b / ((b * b + a2 * a2 / 4.0).sqrt() + a2 / 2.0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn talk_and_uv_forms_agree(alpha in 0.01f64..2.0, b in proptest::collection::vec(-3.0f64..3.0, 1..6)) {
            let a = vec![2.0 * alpha; b.len()];
            let lhs = phi(&b, &a);
            let rhs = alpha * phi_talk(&b, alpha);
            prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
        }

        #[test]
        fn gradient_is_arcsinh(a in 0.05f64..2.0, b in -2.0f64..2.0) {
            let h = 1e-6;
            let fd = (phi(&[b + h], &[a]) - phi(&[b - h], &[a])) / (2.0 * h);
            prop_assert!((fd - (2.0 * b / (a * a)).asinh()).abs() < 1e-5);
        }
    }

    #[test]
    fn limits_are_l2_and_l1() {
        let b = [0.3, -0.2, 0.0];
        let big = 1e3;
        let l2 = b.iter().map(|x| x * x).sum::<f64>() / (big * big);
        assert!((phi(&b, &[big; 3]) / l2 - 1.0).abs() < 1e-6);
        let small: f64 = 1e-8;
        // ||b||_1 = 0.5: phi / log(1/a^2) -> 0.5.
        let ratio = phi(&b, &[small; 3]) / (1.0 / (small * small)).ln();
        assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
        assert_eq!(phi(&[0.0], &[0.7]), 0.0);
        assert_eq!(q(0.0), 0.0);
    }
}

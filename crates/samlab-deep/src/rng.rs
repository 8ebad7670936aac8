//! Counter-based random streams: every random draw of a run is a pure function of `(seed, purpose, counters)`.
//!
//! Weight init, the train/validation split, label noise, the data order of each epoch, the augmentation of each
//! batch, the noise of each SAM group and the examples of the eval-mode training metrics come from their own
//! [`Stream`], keyed by what they are for and where in training they happen. A checkpoint therefore needs no
//! generator state beyond the step and epoch counters, and a resumed run draws exactly what the uninterrupted run
//! would have drawn.

use std::convert::Infallible;

use rand_core::TryRng;
use rand_distr::{Distribution, StandardNormal};

/// What a stream is used for (part of its key, so streams for different purposes never overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Weight initialization.
    Init = 1,
    /// The train/validation split.
    Split = 2,
    /// Label noise of a split (`a` = 0 train, 1 validation).
    LabelNoise = 3,
    /// The order of the training examples in an epoch (`a` = epoch).
    Shuffle = 4,
    /// Augmentation of a batch (`a` = epoch, `b` = batch index in the epoch).
    Augment = 5,
    /// SAM perturbation noise (`a` = step, `b` = group).
    Perturb = 6,
    /// The training examples of the eval-mode training metrics.
    EvalSubset = 7,
    /// The analysis tools ([`crate::analysis`]; `a` = 0: augmentation of the BatchNorm re-estimation pass,
    /// `a` = 1: the start vector of the power iteration).
    Analysis = 8,
}

/// SplitMix64 (Steele, Lea & Flood 2014): 64 bits of state, passes BigCrush, trivially keyed.
#[derive(Clone, Debug)]
pub struct Stream {
    state: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Stream {
    /// The stream for `purpose` at counters `(a, b)` of a run seeded with `seed`.
    pub fn new(seed: u64, purpose: Purpose, a: u64, b: u64) -> Self {
        let mut key = mix(seed ^ 0x5a4d_4c41_4221_0000);
        for word in [purpose as u64, a, b] {
            key = mix(key ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        Stream { state: key }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (Lemire's unbiased multiply-and-reject).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// A standard normal draw (Box-Muller, one value per call so the stream position is simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `n` standard normal draws in f32 (rand_distr's ziggurat over this stream: several times faster than
    /// [`Stream::normal`], for the large noise vectors of SAM's random perturbations and random starts).
    pub fn normals_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| Distribution::<f32>::sample(&StandardNormal, self))
            .collect()
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// The stream as a `rand` generator (64 bits per draw; 32-bit draws take the high half).
impl TryRng for Stream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((Stream::next_u64(self) >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(Stream::next_u64(self))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            chunk.copy_from_slice(&Stream::next_u64(self).to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed_and_reproducible() {
        let a: Vec<u64> = (0..4)
            .map(|_| Stream::new(1, Purpose::Shuffle, 3, 0).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let other = [
            Stream::new(2, Purpose::Shuffle, 3, 0).next_u64(),
            Stream::new(1, Purpose::Augment, 3, 0).next_u64(),
            Stream::new(1, Purpose::Shuffle, 4, 0).next_u64(),
            Stream::new(1, Purpose::Shuffle, 3, 1).next_u64(),
        ];
        assert!(other.iter().all(|&x| x != a[0]));
    }

    #[test]
    fn draws_have_the_right_moments() {
        let mut s = Stream::new(7, Purpose::Init, 0, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| s.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[s.below(6)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        let zs = s.normals_f32(n);
        let mean = zs.iter().map(|&z| z as f64).sum::<f64>() / n as f64;
        let var = zs.iter().map(|&z| (z as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let tail = zs.iter().filter(|z| z.abs() > 3.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
        assert!((tail - 0.0027).abs() < 0.0006, "{tail}");
        let mut p = s.permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}

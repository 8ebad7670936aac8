//! Which training examples each update uses, shared by the analytic engines.

use crate::numpy_rng::NumpyRandomState;
use crate::sam::AscentSource;

/// The batch of the current update and of the previous one (the ascent batch of the deep-net n-SAM proxy).
#[derive(Clone, Debug)]
pub struct Batches {
    current: Vec<usize>,
    previous: Vec<usize>,
    n: usize,
    sampled: bool,
}

impl Batches {
    /// Every one of the `n` examples in order when `batch_size` is `None` (full batch); otherwise `batch_size`
    /// uniform draws with replacement per update (NumPy's `randint` stream, as the authors' SGD).
    pub fn new(n: usize, batch_size: Option<usize>) -> Self {
        let current: Vec<usize> = match batch_size {
            None => (0..n).collect(),
            Some(b) => vec![0; b],
        };
        Batches {
            previous: current.clone(),
            current,
            n,
            sampled: batch_size.is_some(),
        }
    }

    /// Draws the batch of update `t` (a no-op for full batches); at `t = 0` the previous batch is the first one.
    pub fn advance(&mut self, t: usize, rng: &mut NumpyRandomState) {
        if !self.sampled {
            return;
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        for i in self.current.iter_mut() {
            *i = rng.randint(self.n as u64) as usize;
        }
        if t == 0 {
            self.previous.clone_from(&self.current);
        }
    }

    /// The examples of this update.
    pub fn current(&self) -> &[usize] {
        &self.current
    }

    /// The examples the SAM ascent uses.
    pub fn ascent(&self, source: AscentSource) -> &[usize] {
        match source {
            AscentSource::SameBatch => &self.current,
            AscentSource::PreviousBatch => &self.previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_stay_put_and_mini_batches_follow_numpy() {
        let mut rng = NumpyRandomState::new(7);
        let mut full = Batches::new(4, None);
        full.advance(0, &mut rng);
        assert_eq!(full.current(), &[0, 1, 2, 3]);
        assert_eq!(full.ascent(AscentSource::PreviousBatch), &[0, 1, 2, 3]);
        let mut mini = Batches::new(20, Some(2));
        let mut rng = NumpyRandomState::new(7);
        mini.advance(0, &mut rng);
        // RandomState(7).randint(0, 20) draws 15, 4, 3, 19, ...
        assert_eq!(mini.current(), &[15, 4]);
        assert_eq!(mini.ascent(AscentSource::PreviousBatch), &[15, 4]);
        mini.advance(1, &mut rng);
        assert_eq!(mini.current(), &[3, 19]);
        assert_eq!(mini.ascent(AscentSource::PreviousBatch), &[15, 4]);
        assert_eq!(mini.ascent(AscentSource::SameBatch), &[3, 19]);
    }
}

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

    /// Draws the batch of update `t` (a no-op for full batches; at `t = 0` the previous batch is the first one)
    /// and returns it with the examples the SAM ascent of `source` uses.
    pub fn advance(
        &mut self,
        t: usize,
        rng: &mut NumpyRandomState,
        source: AscentSource,
    ) -> (&[usize], &[usize]) {
        if self.sampled {
            std::mem::swap(&mut self.previous, &mut self.current);
            for i in self.current.iter_mut() {
                *i = rng.randint(self.n as u64) as usize;
            }
            if t == 0 {
                self.previous.clone_from(&self.current);
            }
        }
        let ascent = match source {
            AscentSource::SameBatch => &self.current,
            AscentSource::PreviousBatch => &self.previous,
        };
        (&self.current, ascent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_stay_put_and_mini_batches_follow_numpy() {
        let mut rng = NumpyRandomState::new(7);
        let mut full = Batches::new(4, None);
        let (batch, ascent) = full.advance(0, &mut rng, AscentSource::PreviousBatch);
        assert_eq!((batch, ascent), (&[0, 1, 2, 3][..], &[0, 1, 2, 3][..]));
        let mut mini = Batches::new(20, Some(2));
        let mut rng = NumpyRandomState::new(7);
        // RandomState(7).randint(0, 20) draws 15, 4, 3, 19, ...
        let (batch, ascent) = mini.advance(0, &mut rng, AscentSource::PreviousBatch);
        assert_eq!((batch, ascent), (&[15, 4][..], &[15, 4][..]));
        let (batch, ascent) = mini.advance(1, &mut rng, AscentSource::PreviousBatch);
        assert_eq!((batch, ascent), (&[3, 19][..], &[15, 4][..]));
        let mut same = Batches::new(20, Some(2));
        let mut rng = NumpyRandomState::new(7);
        same.advance(0, &mut rng, AscentSource::SameBatch);
        let (batch, ascent) = same.advance(1, &mut rng, AscentSource::SameBatch);
        assert_eq!((batch, ascent), (&[3, 19][..], &[3, 19][..]));
    }
}

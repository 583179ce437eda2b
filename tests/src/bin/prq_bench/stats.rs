//! Percentiles of samples, by nearest rank: the reported figure is always one that was
//! measured, and with fewer than 100 samples p99 is the worst one.

#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

impl Percentiles {
    /// Panics on no samples: every measurement takes some.
    pub fn of(mut samples: Vec<f64>) -> Self {
        assert!(!samples.is_empty(), "percentiles of no samples");
        samples.sort_by(f64::total_cmp);
        Self {
            p50: rank(&samples, 50.0),
            p99: rank(&samples, 99.0),
            n: samples.len(),
        }
    }
}

fn rank(sorted: &[f64], p: f64) -> f64 {
    let k = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

/// The median, for a handful of repeats.
pub fn median(samples: &[f64]) -> f64 {
    Percentiles::of(samples.to_vec()).p50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let p = Percentiles::of((1..=200).rev().map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.n), (100.0, 198.0, 200));
        let few = Percentiles::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((few.p50, few.p99), (2.0, 3.0));
    }
}

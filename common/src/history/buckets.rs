//! Latencies as counts in fixed buckets, the same bounds as the Prometheus
//! histograms (`crate::metrics`). Counts from any number of processes are
//! summed bucket by bucket; the quantile is read from the sum the way
//! PromQL's `histogram_quantile` does (linear within the bucket).

use std::time::Duration;

/// Counts per bucket: `counts[i]` holds latencies in
/// `(bounds[i-1], bounds[i]]`; the last one (`counts[bounds.len()]`) those
/// above every bound (`+Inf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buckets {
    counts: Vec<u64>,
}

impl Buckets {
    /// Counts one latency.
    pub fn record(&mut self, bounds: &[f64], latency: Duration) {
        let secs = latency.as_secs_f64();
        let i = bounds.partition_point(|&b| b < secs);
        self.add_at(bounds, i, 1);
    }

    /// Adds `n` to bucket `i` (`bounds.len()`: `+Inf`).
    pub fn add_at(&mut self, bounds: &[f64], i: usize, n: u64) {
        if self.counts.len() < bounds.len() + 1 {
            self.counts.resize(bounds.len() + 1, 0);
        }
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
    }

    /// Adds another process's (or minute's) counts.
    pub fn merge(&mut self, other: &Buckets) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
    }

    /// The non-empty buckets as `(index, count)`.
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile in seconds (`None` with no samples): linear within
    /// the bucket it falls in; in the `+Inf` bucket, the largest bound.
    pub fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if (below + count) as f64 >= rank {
                let Some(&upper) = bounds.get(i) else {
                    return bounds.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
                let into = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower) * into.clamp(0.0, 1.0));
            }
            below += count;
        }
        bounds.last().copied()
    }
}

/// A bucket's field-name suffix: its upper bound (`0.5`, `+Inf`), so the
/// stored counts say what they mean whatever the bound list becomes.
pub fn label(bounds: &[f64], i: usize) -> String {
    match bounds.get(i) {
        Some(b) => format!("{b}"),
        None => "+Inf".to_owned(),
    }
}

/// The bucket a stored label names, if it is one of `bounds` (or `+Inf`).
pub fn index_of(bounds: &[f64], label: &str) -> Option<usize> {
    if label == "+Inf" {
        return Some(bounds.len());
    }
    let value: f64 = label.parse().ok()?;
    bounds.iter().position(|&b| b == value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::HTTP_LATENCY_BUCKETS as B;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut b = Buckets::default();
        b.record(B, ms(5)); // exactly 0.005: le="0.005"
        b.record(B, ms(6));
        b.record(B, Duration::from_secs(60)); // +Inf
        let got: Vec<(usize, u64)> = b.nonzero().collect();
        assert_eq!(got, vec![(0, 1), (1, 1), (B.len(), 1)]);
        assert_eq!(label(B, 0), "0.005");
        assert_eq!(label(B, B.len()), "+Inf");
        assert_eq!(index_of(B, "5"), Some(10));
        assert_eq!(index_of(B, "+Inf"), Some(B.len()));
        assert_eq!(index_of(B, "0.3"), None);
    }

    #[test]
    fn p95_of_merged_processes_is_read_from_the_summed_buckets() {
        // Process A: 95 fast requests; process B: 5 slow ones. Averaging
        // each process's p95 would say ~3.6 s; the fleet's p95 is the 95th
        // request of 100, at the top of the fast bucket.
        let (mut a, mut b) = (Buckets::default(), Buckets::default());
        for _ in 0..95 {
            a.record(B, ms(80)); // (0.05, 0.1]
        }
        for _ in 0..5 {
            b.record(B, Duration::from_secs(7)); // (5, 10]
        }
        a.merge(&b);
        assert_eq!(a.total(), 100);
        assert_eq!(a.quantile(B, 0.95), Some(0.1));
        // Ten slow ones of 100 put p95 halfway into (5, 10].
        let mut c = Buckets::default();
        for _ in 0..90 {
            c.record(B, ms(80));
        }
        for _ in 0..10 {
            c.record(B, Duration::from_secs(7));
        }
        assert_eq!(c.quantile(B, 0.95), Some(7.5));
    }

    #[test]
    fn no_samples_no_quantile_and_inf_reads_as_the_largest_bound() {
        assert_eq!(Buckets::default().quantile(B, 0.95), None);
        let mut b = Buckets::default();
        b.record(B, Duration::from_secs(90));
        assert_eq!(b.quantile(B, 0.95), Some(10.0));
    }
}

//! Request sizing and the distribution test.
//!
//! Two ways a healthy mesh could fail the check by chance, each bounded:
//! - an expected version is never answered although reachable: with k versions equally likely, the chance over
//!   N requests is k·(1−1/k)^N, kept below [`BETA`];
//! - the chi-square goodness-of-fit test against an even split rejects a fair balancer with probability
//!   [`ALPHA`].
//!
//! So one source cluster falsely fails with probability at most `ALPHA + BETA`.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// False-failure bound of the distribution test.
pub const ALPHA: f64 = 1e-4;
/// False-failure bound of "an expected version was never seen".
pub const BETA: f64 = 1e-9;

/// Requests per source for `k` expected versions: enough that a version is missed by chance with probability
/// below [`BETA`], at least 50 per version so the chi-square approximation holds, rounded up to whole batches
/// of 10.
pub fn default_requests(k: usize) -> u32 {
    let k = k.max(1);
    let never_seen = if k == 1 {
        1.0
    } else {
        ((BETA / k as f64).ln() / (1.0 - 1.0 / k as f64).ln()).ceil()
    };
    let n = never_seen.max(50.0 * k as f64) as u32;
    n.div_ceil(10) * 10
}

/// p-value of the chi-square goodness-of-fit test of `counts` against an even split. `None` for fewer than two
/// buckets or no observations.
pub fn uniform_p_value(counts: &[u64]) -> Option<f64> {
    proportional_p_value(&counts.iter().map(|&c| (c, 1)).collect::<Vec<_>>())
}

/// p-value of the chi-square goodness-of-fit test of `(count, weight)` buckets against a split in proportion to
/// the weights (a bucket of two endpoints expects twice the answers of one). `None` for fewer than two buckets,
/// no observations or no weight.
pub fn proportional_p_value(buckets: &[(u64, u32)]) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.0).sum();
    let weights: u32 = buckets.iter().map(|b| b.1).sum();
    if buckets.len() < 2 || total == 0 || weights == 0 || buckets.iter().any(|b| b.1 == 0) {
        return None;
    }
    let stat: f64 = buckets
        .iter()
        .map(|&(c, w)| {
            let expected = total as f64 * f64::from(w) / f64::from(weights);
            (c as f64 - expected).powi(2) / expected
        })
        .sum();
    let dist = ChiSquared::new((buckets.len() - 1) as f64).ok()?;
    Some(dist.sf(stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_versions_need_a_hundred_requests() {
        assert_eq!(default_requests(2), 100);
        // the never-seen bound holds at that size
        assert!(2.0 * 0.5f64.powi(100) < BETA);
        assert!(default_requests(3) >= 150);
    }

    #[test]
    fn fair_split_passes_and_one_sided_fails() {
        let fair = uniform_p_value(&[52, 48]).expect("p");
        assert!(fair > 0.5, "{fair}");
        let skewed = uniform_p_value(&[95, 5]).expect("p");
        assert!(skewed < ALPHA, "{skewed}");
        // statrs reference point: 162/138 -> chi2 = 1.92, p ~ 0.166
        let p = uniform_p_value(&[162, 138]).expect("p");
        assert!((p - 0.166).abs() < 0.001, "{p}");
        assert!(uniform_p_value(&[10]).is_none());
    }

    #[test]
    fn a_bucket_of_two_endpoints_expects_twice_the_answers() {
        // 54 from one pod, 96 through a network of two: a fair 1:2 split, an unfair 1:1 one.
        let p = proportional_p_value(&[(54, 1), (96, 2)]).expect("p");
        assert!(p > 0.3, "{p}");
        let even = uniform_p_value(&[54, 96]).expect("p");
        assert!(even < 0.001, "{even}");
        let skewed = proportional_p_value(&[(100, 1), (50, 2)]).expect("p");
        assert!(skewed < ALPHA, "{skewed}");
    }
}

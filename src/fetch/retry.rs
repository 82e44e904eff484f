//! Failure classification and retry timing: transient failures (connection reset, timeout,
//! truncated body, 408/429/5xx) are retried with exponential backoff and jitter, honouring
//! `Retry-After`; permanent ones (401/403/404, bad content) end the attempt at once.

use std::time::{Duration, SystemTime};

/// Why a fetch attempt failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth retrying; `retry_after` is the server's `Retry-After`, if it sent one.
    Transient {
        /// What happened (no secrets).
        cause: String,
        /// Server-requested delay.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying.
    Permanent(String),
}

impl Failure {
    /// A transient failure without a server-requested delay.
    pub fn transient(cause: impl Into<String>) -> Failure {
        Failure::Transient {
            cause: cause.into(),
            retry_after: None,
        }
    }

    /// The cause, for messages.
    pub fn cause(&self) -> &str {
        match self {
            Failure::Transient { cause, .. } => cause,
            Failure::Permanent(c) => c,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cause())
    }
}

/// Retry limits.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts for a transient failure that made no progress, before giving up.
    pub attempts: u32,
    /// First backoff delay.
    pub base: Duration,
    /// Longest backoff delay (and longest `Retry-After` honoured).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// A random number in [0, 1) (std's randomly keyed hasher; no cryptographic need here).
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl RetryPolicy {
    /// The delay before retry number `n` (1-based): the server's `Retry-After` when given (capped
    /// at `max`), else `base * 2^(n-1)` with ±50% jitter, capped at `max`.
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        exp.mul_f64(0.5 + random_unit())
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = parse_http_date(v)?;
    Some(
        t.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, hms, "GMT"] = parts.as_slice() else {
        return None;
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let (yy, mm2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_and_backoff() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        let p = RetryPolicy::default();
        for n in 1..10 {
            let d = p.delay(n, None);
            assert!(d <= p.max.mul_f64(1.5));
            assert!(d >= p.base.mul_f64(0.5));
        }
        assert_eq!(p.delay(1, Some(Duration::from_secs(999))), p.max);
    }
}

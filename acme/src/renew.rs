//! When to renew and when to retry: pure functions of times and a random draw.

use std::time::{Duration, SystemTime};

/// The renewal time of a certificate valid from `not_before` to `not_after`.
///
/// At 2/3 of the lifetime, moved earlier by up to 1/20 of the lifetime by `jitter` (0..1) so a
/// fleet does not renew at once; `renew_before` (cert-manager's setting) replaces the 2/3 rule;
/// an ARI window (RFC 9773) moves it earlier when the CA wants that, to a point in the window
/// chosen by `jitter`.
pub fn renewal_time(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Option<Duration>,
    ari_window: Option<(SystemTime, SystemTime)>,
    jitter: f64,
) -> SystemTime {
    let jitter = jitter.clamp(0.0, 1.0);
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let planned = match renew_before {
        Some(before) => not_after.checked_sub(before).unwrap_or(not_before),
        None => not_before + lifetime.mul_f64(2.0 / 3.0),
    };
    let planned =
        planned.checked_sub(lifetime.mul_f64(jitter / 20.0)).unwrap_or(not_before).max(not_before);
    match ari_window {
        Some((start, end)) if end >= start => {
            let in_window = start + end.duration_since(start).unwrap_or_default().mul_f64(jitter);
            in_window.min(planned)
        }
        _ => planned,
    }
}

/// Delay before retry number `attempt` (0 = first retry): exponential from `base`, capped at
/// `max`, plus up to 10 % jitter, and never before the CA's `retry_after`.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<SystemTime>,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let exp = base
        .checked_mul(1_u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let exp = exp + exp.mul_f64(jitter.clamp(0.0, 1.0) / 10.0);
    let asked = retry_after.and_then(|at| at.duration_since(now).ok()).unwrap_or_default();
    exp.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn t(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(days * DAY)
    }

    #[test]
    fn renews_at_two_thirds_moved_earlier_by_jitter_only() {
        assert_eq!(renewal_time(t(0), t(90), None, None, 0.0), t(60));
        let jittered = renewal_time(t(0), t(90), None, None, 1.0);
        assert!(jittered < t(60) && jittered >= t(55), "{jittered:?}");
    }

    #[test]
    fn renew_before_replaces_the_two_thirds_rule() {
        let at = renewal_time(t(0), t(90), Some(Duration::from_secs(10 * DAY)), None, 0.0);
        assert_eq!(at, t(80));
        // A renew-before longer than the lifetime means now-ish, never before issuance.
        let at = renewal_time(t(0), t(90), Some(Duration::from_secs(100 * DAY)), None, 0.0);
        assert_eq!(at, t(0));
    }

    #[test]
    fn an_ari_window_only_ever_moves_renewal_earlier() {
        let early = renewal_time(t(0), t(90), None, Some((t(10), t(12))), 0.5);
        assert_eq!(early, t(11));
        let late = renewal_time(t(0), t(90), None, Some((t(80), t(85))), 0.0);
        assert_eq!(late, t(60));
    }

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let now = t(1);
        assert_eq!(backoff(0, base, max, None, now, 0.0), base);
        assert_eq!(backoff(3, base, max, None, now, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(30, base, max, None, now, 0.0), max);
        assert_eq!(backoff(99, base, max, None, now, 0.0), max);
        let asked = now + Duration::from_secs(300);
        assert_eq!(backoff(0, base, max, Some(asked), now, 0.0), Duration::from_secs(300));
        let jittered = backoff(0, base, max, None, now, 1.0);
        assert_eq!(jittered, Duration::from_millis(1100));
    }
}

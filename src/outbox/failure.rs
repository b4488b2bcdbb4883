//! Why a delivery attempt failed and what happens to its row next: a rate limit or a
//! deferral holds the lane without counting an attempt, a permanent error fails the row at
//! once, anything else is retried with exponential [`backoff`] up to [`MAX_ATTEMPTS`].
//!
//! Kept apart from the worker so the retry policy can be read (and tested) in one place.

use std::time::Duration;

use chrono::TimeDelta;

use crate::paging::PageError;
use crate::slack::SlackError;

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Slack said no or could not be reached.
    #[error(transparent)]
    Slack(#[from] SlackError),
    /// PagerDuty said no or could not be reached.
    #[error(transparent)]
    Paging(#[from] PageError),
    /// A mail server or Statuspage said no or could not be reached.
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    /// Something on our side (database, a missing channel record): retried.
    #[error("{0}")]
    Internal(String),
    /// The payload cannot be delivered, ever (unknown incident, bad JSON).
    #[error("{0}")]
    Permanent(String),
    /// A row this one depends on failed for good (the incident channel was never opened):
    /// failed at once, without a notice of its own (the root failure had one).
    #[error("{0}")]
    Dependency(String),
    /// Not yet: pacing, a 429, or waiting for the incident channel. Not a failed attempt.
    #[error("deferred for {0:?}")]
    Deferred(Duration),
    /// The call did not answer in time.
    #[error("{0} did not answer within {1:?}")]
    TimedOut(&'static str, Duration),
}

impl DeliveryError {
    pub(super) fn is_permanent(&self) -> bool {
        match self {
            DeliveryError::Slack(s) => s.is_permanent(),
            DeliveryError::Paging(p) => p.is_permanent(),
            DeliveryError::Notify(n) => n.is_permanent(),
            DeliveryError::Permanent(_) | DeliveryError::Dependency(_) => true,
            DeliveryError::Internal(_)
            | DeliveryError::Deferred(_)
            | DeliveryError::TimedOut(..) => false,
        }
    }

    /// For a rate limit or a deferral: how long to hold the lane, without counting an
    /// attempt.
    pub(super) fn hold(&self) -> Option<Duration> {
        match self {
            DeliveryError::Deferred(d) => Some(*d),
            DeliveryError::Slack(SlackError::RateLimited { retry_after }) => {
                Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
            }
            DeliveryError::Paging(PageError::Retry {
                status: 429,
                retry_after,
            }) => Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER)),
            _ => None,
        }
    }
}

/// Failed attempts after which a row is marked failed even if its error looked transient
/// (with the 5-minute cap this is about two hours of trying). Rate limits and pacing do
/// not count. Stakeholder notices are exempt: a mail server or status page that is down
/// for a day delays them (every 5 minutes) but never loses them.
pub const MAX_ATTEMPTS: i64 = 30;
/// The wait after a 429 that came without `Retry-After`.
pub(super) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The backoff before attempt `attempts + 1`.
pub fn backoff(attempts: i64) -> TimeDelta {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    TimeDelta::seconds(2i64.saturating_pow(exp).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(1), TimeDelta::seconds(1));
        assert_eq!(backoff(2), TimeDelta::seconds(2));
        assert_eq!(backoff(5), TimeDelta::seconds(16));
        assert_eq!(backoff(12), TimeDelta::seconds(300));
    }

    #[test]
    fn rate_limits_and_deferrals_hold_without_counting_and_are_not_permanent() {
        let limited = DeliveryError::Slack(SlackError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(limited.hold(), Some(Duration::from_secs(7)));
        assert!(!limited.is_permanent());
        let busy = DeliveryError::Paging(PageError::Retry {
            status: 429,
            retry_after: None,
        });
        assert_eq!(busy.hold(), Some(DEFAULT_RETRY_AFTER));
        let down = DeliveryError::Paging(PageError::Retry {
            status: 503,
            retry_after: None,
        });
        assert_eq!(down.hold(), None);
        assert!(DeliveryError::Dependency("x".into()).is_permanent());
        assert!(!DeliveryError::TimedOut("x", Duration::from_secs(1)).is_permanent());
    }
}

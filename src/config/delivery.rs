//! `[delivery]` and `[retention]`: how the outbox delivers and what the store prunes.
//!
//! [`DeliverySettings`] and [`PaceSettings`] are the outbox worker's settings, but they are
//! defined here with the keys they are parsed from: the outbox imports config (through
//! `commands`, too), so config importing the outbox would close a circle.

use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;

use super::{ConfigError, duration, err};

/// How the worker delivers.
#[derive(Clone, Copy, Debug)]
pub struct DeliverySettings {
    /// Slack lanes in flight at once. 256 by default: a lane's slot frees when its call
    /// returns, but the lane comes back only after the outcome is committed and a claim
    /// hands out more, so with few slots deliveries wait on the store's round trips, not
    /// on Slack. In the load bench (10,000 SEV1 reminders due within two seconds, a Slack
    /// stand-in answering at once) the reminders' p99 from firing to Slack was 2.2-2.8 s
    /// with 64 and 0.2-0.5 s with 256. Each channel still gets at most one post per
    /// second (pacing), whatever the slots.
    pub slack_slots: usize,
    /// PagerDuty lanes in flight at once.
    pub page_slots: usize,
    /// Recovery-run lanes (previews, executions) in flight at once.
    pub run_slots: usize,
    /// Stakeholder lanes (email, Statuspage) in flight at once.
    pub stakeholder_slots: usize,
    /// The longest one Slack call may take.
    pub call_timeout: Duration,
    /// The longest one preview or execution may take as a whole (the executors bound
    /// each SDK call more tightly; this frees the slot if one hangs regardless).
    pub run_timeout: Duration,
    /// How long a claimed lane is reserved without a heartbeat.
    pub lease: TimeDelta,
    /// How often the leases of in-flight deliveries are renewed.
    pub heartbeat: TimeDelta,
    /// Slack pacing.
    pub pacing: PaceSettings,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            slack_slots: 256,
            page_slots: 16,
            run_slots: 8,
            stakeholder_slots: 8,
            call_timeout: Duration::from_secs(15),
            run_timeout: Duration::from_secs(15 * 60),
            lease: TimeDelta::seconds(10),
            heartbeat: TimeDelta::seconds(3),
            pacing: PaceSettings::default(),
        }
    }
}

/// How calls are paced.
#[derive(Clone, Copy, Debug)]
pub struct PaceSettings {
    /// Minimum spacing of `chat.postMessage` calls to one channel.
    pub post_interval: Duration,
    /// Whether per-method tier limits apply (off only for load tests against a stand-in).
    pub method_tiers: bool,
    /// The longest wait slept through inside a delivery; longer waits hand the lane back.
    pub inline_wait: Duration,
}

impl Default for PaceSettings {
    fn default() -> Self {
        Self {
            post_interval: Duration::from_secs(1),
            method_tiers: true,
            // Short: a delivery that sleeps holds one of the class's slots, and a second
            // post to a channel waits a whole second. Longer waits hand the lane back with
            // its slot reserved, so other channels use the slot meanwhile.
            inline_wait: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliverySection {
    pub(super) slack_in_flight: Option<usize>,
    pub(super) pagerduty_in_flight: Option<usize>,
    pub(super) runs_in_flight: Option<usize>,
    pub(super) call_timeout: Option<String>,
    pub(super) run_timeout: Option<String>,
    pub(super) lease: Option<String>,
    pub(super) heartbeat: Option<String>,
    pub(super) post_interval: Option<String>,
    pub(super) pace_methods: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RetentionSection {
    pub(super) keep: Option<String>,
    pub(super) every: Option<String>,
}

/// How long working rows are kept (see `Store::prune`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Delivered outbox rows, finished timers of resolved incidents and inbound event ids
    /// older than this are deleted. The timeline is never pruned.
    pub keep: TimeDelta,
    /// How often to prune.
    pub every: TimeDelta,
}

/// The `[delivery]` section over [`DeliverySettings::default`].
pub(super) fn delivery_config(section: DeliverySection) -> Result<DeliverySettings, ConfigError> {
    let mut d = DeliverySettings::default();
    let std_duration = |key: &str, text: &str| -> Result<std::time::Duration, ConfigError> {
        duration(key, text)?
            .to_std()
            .map_err(|_| err(key, "must be longer than zero"))
    };
    let slots = |key: &str, n: Option<usize>, default: usize| match n {
        Some(0) => Err(err(key, "must be at least 1")),
        Some(n) if n > 1024 => Err(err(key, "must be at most 1024")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    d.slack_slots = slots(
        "delivery.slack_in_flight",
        section.slack_in_flight,
        d.slack_slots,
    )?;
    d.page_slots = slots(
        "delivery.pagerduty_in_flight",
        section.pagerduty_in_flight,
        d.page_slots,
    )?;
    d.run_slots = slots(
        "delivery.runs_in_flight",
        section.runs_in_flight,
        d.run_slots,
    )?;
    if let Some(t) = section.call_timeout {
        d.call_timeout = std_duration("delivery.call_timeout", &t)?;
    }
    if let Some(t) = section.run_timeout {
        d.run_timeout = std_duration("delivery.run_timeout", &t)?;
    }
    if let Some(t) = section.lease {
        d.lease = duration("delivery.lease", &t)?;
    }
    if let Some(t) = section.heartbeat {
        d.heartbeat = duration("delivery.heartbeat", &t)?;
    }
    if d.heartbeat * 2 > d.lease {
        return Err(err(
            "delivery.heartbeat",
            format!(
                "must be at most half of delivery.lease ({}s), so one missed beat does not lose a lease",
                d.lease.num_seconds()
            ),
        ));
    }
    if let Some(t) = section.post_interval {
        // "0s" is allowed here (tests): `duration` refuses zero, so parse directly.
        d.pacing.post_interval = humantime::parse_duration(&t).map_err(|e| {
            err(
                "delivery.post_interval",
                format!("`{t}` is not a duration like \"1s\" ({e})"),
            )
        })?;
    }
    if let Some(p) = section.pace_methods {
        d.pacing.method_tiers = p;
    }
    Ok(d)
}

/// The `[retention]` section, with its defaults (keep 7 days, prune hourly).
pub(super) fn retention_config(section: RetentionSection) -> Result<RetentionConfig, ConfigError> {
    Ok(RetentionConfig {
        keep: duration("retention.keep", section.keep.as_deref().unwrap_or("7d"))?,
        every: duration("retention.every", section.every.as_deref().unwrap_or("1h"))?,
    })
}

//! Pacing of Slack Web API calls, so Klaxon stays under Slack's published limits before
//! Slack has to answer 429 (<https://api.slack.com/apis/rate-limits>):
//! - `chat.postMessage`: about one message per second per channel;
//! - other methods by tier, per workspace: Tier 2 ~20/min, Tier 3 ~50/min, Tier 4
//!   ~100/min, each a token bucket holding one minute's worth, so a burst goes out at
//!   once and a sustained flood is spread out;
//! - a 429 pauses the method (or, for posts, the channel) for its `Retry-After`.
//!
//! The worker asks before each call. A short wait (up to `inline_wait`) is slept through
//! in the delivering task; a longer one hands the lane back with a due time, so a slot is
//! never held for long by a call that cannot go yet. Neither counts as a failed attempt.
//! A call handed back keeps its place: the slot is reserved under the row's ticket and
//! honoured when the row comes back, so hundreds of lanes waiting on one channel (the
//! announcements in `#incident-response` during a storm) queue once each instead of
//! all retrying every second.
//!
//! The state is in memory, per process: replicas on PostgreSQL pace independently (each
//! holds its share of the lanes), which is what Slack's per-app limits need in practice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Pacing is configured in `[delivery]`; the settings type lives with that config.
pub use crate::config::PaceSettings;

/// The pacer's notion of time: the injected clock's (so tests on a manual clock see a
/// `Retry-After` run out when they move the clock).
type Instant = DateTime<Utc>;

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn span(from: Instant, to: Instant) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

/// Calls per minute Slack documents for a method's tier, for the methods Klaxon calls.
/// `chat.postMessage` is paced per channel instead; `None` means unpaced.
pub fn tier_per_minute(method: &str) -> Option<f64> {
    Some(match method {
        "conversations.create"
        | "conversations.setPurpose"
        | "conversations.setTopic"
        | "conversations.list"
        | "usergroups.users.list" => 20.0,
        "conversations.invite"
        | "chat.update"
        | "conversations.history"
        | "conversations.replies" => 50.0,
        "chat.postEphemeral"
        | "views.open"
        | "views.publish"
        | "users.info"
        | "users.lookupByEmail" => 100.0,
        _ => return None,
    })
}

/// What the pacer says about one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Go after this wait (zero: now). The slot is reserved.
    Go(Duration),
    /// Not within `inline_wait`: try again after this long. Nothing was reserved.
    Defer(Duration),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Next free slot for a post, per channel.
    channels: HashMap<String, Instant>,
    /// Tier token buckets, per method.
    buckets: HashMap<&'static str, Bucket>,
    /// 429 pauses, per method or `method channel`.
    paused: HashMap<String, Instant>,
    /// Slots promised to calls that were handed back, by `ticket method channel`.
    tickets: HashMap<String, Instant>,
    /// Per channel, one interval after the last post Slack answered: a post that left
    /// late (queued in the client) still gets its full second before the next.
    answered: HashMap<String, Instant>,
}

/// Paces Slack calls (see the module doc).
#[derive(Debug, Default)]
pub struct Pacer {
    settings: PaceSettings,
    state: Mutex<State>,
}

/// Entries kept before expired ones are swept from the maps.
const SWEEP_ABOVE: usize = 10_000;

fn pause_key(method: &str, channel: Option<&str>) -> String {
    match channel {
        Some(c) if method == "chat.postMessage" => format!("{method} {c}"),
        _ => method.to_string(),
    }
}

impl Pacer {
    /// A pacer with `settings`.
    pub fn new(settings: PaceSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    /// Asks to call `method` (on `channel`) at `now`, for the outbox row `ticket`.
    pub fn acquire(
        &self,
        method: &'static str,
        channel: Option<&str>,
        ticket: i64,
        now: Instant,
    ) -> Grant {
        self.acquire_within(method, channel, ticket, now, self.settings.inline_wait)
    }

    /// [`Pacer::acquire`], sleeping through waits up to `inline_wait` instead of the
    /// settings' (announcement digests wait out their channel's second in place: they
    /// hold the only announcement slot, so waiting costs nobody else).
    pub fn acquire_within(
        &self,
        method: &'static str,
        channel: Option<&str>,
        ticket: i64,
        now: Instant,
        inline_wait: Duration,
    ) -> Grant {
        let mut state = self.state.lock().expect("pacer lock");
        let ticket = format!("{ticket} {method} {}", channel.unwrap_or(""));
        // A reserved slot that has passed entirely (the lane came back late) is not used:
        // later slots went to other calls, and this one would land beside them.
        let floor = channel
            .filter(|_| method == "chat.postMessage")
            .and_then(|c| state.answered.get(c).copied());
        let reserved = state.tickets.remove(&ticket).filter(|slot| {
            *slot + delta(self.settings.post_interval) > now && floor.is_none_or(|f| *slot >= f)
        });
        if let Some(slot) = reserved {
            let wait = span(now, slot);
            if wait > inline_wait {
                state.tickets.insert(ticket, slot);
                return Grant::Defer(wait);
            }
            return Grant::Go(wait);
        }
        let mut earliest = now;
        if let Some(until) = state.paused.get(&pause_key(method, channel)) {
            earliest = earliest.max(*until);
        }
        if let Some(until) = state.paused.get(method) {
            earliest = earliest.max(*until);
        }
        let post_channel = channel.filter(|_| method == "chat.postMessage");
        if let Some(next) = post_channel.and_then(|c| state.channels.get(c)) {
            earliest = earliest.max(*next);
        }
        if let Some(floor) = floor {
            earliest = earliest.max(floor);
        }
        let rate = tier_per_minute(method).filter(|_| self.settings.method_tiers);
        if let Some(per_minute) = rate {
            let per_second = per_minute / 60.0;
            let bucket = state.buckets.entry(method).or_insert(Bucket {
                tokens: per_minute,
                at: now,
            });
            let elapsed = span(bucket.at, now).as_secs_f64();
            let tokens = (bucket.tokens + elapsed * per_second).min(per_minute);
            if tokens < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - tokens) / per_second);
                earliest = earliest.max(now + delta(wait));
            }
        }
        let wait = span(now, earliest);
        // A 429 pause is not a slot: nothing to reserve, ask again when it ends.
        let paused = state
            .paused
            .get(&pause_key(method, channel))
            .or(state.paused.get(method))
            .is_some_and(|until| *until >= earliest);
        if paused && wait > inline_wait {
            return Grant::Defer(wait);
        }
        if let Some(c) = post_channel {
            if state.channels.len() > SWEEP_ABOVE {
                state.channels.retain(|_, next| *next > now);
            }
            state
                .channels
                .insert(c.to_string(), earliest + delta(self.settings.post_interval));
        }
        if let Some(per_minute) = rate {
            let per_second = per_minute / 60.0;
            let bucket = state.buckets.get_mut(method).expect("inserted above");
            let elapsed = span(bucket.at, now).as_secs_f64();
            // May go below zero: the tokens of slots already promised to waiting calls.
            bucket.tokens = (bucket.tokens + elapsed * per_second).min(per_minute) - 1.0;
            bucket.at = now;
        }
        if wait > inline_wait {
            if state.tickets.len() > SWEEP_ABOVE {
                let stale = now - TimeDelta::minutes(10);
                state.tickets.retain(|_, slot| *slot > stale);
            }
            state.tickets.insert(ticket, earliest);
            return Grant::Defer(wait);
        }
        Grant::Go(wait)
    }

    /// Slack answered a post to `channel` at `now`: the next post there goes one interval
    /// later at the earliest, however late this one left.
    pub fn answered(&self, method: &str, channel: Option<&str>, now: Instant) {
        let Some(channel) = channel.filter(|_| method == "chat.postMessage") else {
            return;
        };
        let mut state = self.state.lock().expect("pacer lock");
        if state.answered.len() > SWEEP_ABOVE {
            state.answered.retain(|_, t| *t > now);
        }
        let next = now + delta(self.settings.post_interval);
        let entry = state.answered.entry(channel.to_string()).or_insert(next);
        *entry = (*entry).max(next);
        let reserved = state.channels.entry(channel.to_string()).or_insert(next);
        *reserved = (*reserved).max(next);
    }

    /// When `channel` may take its next post, if that is paced at all: a lane that has
    /// just posted there is not worth claiming before.
    pub fn next_post_at(&self, channel: &str) -> Option<Instant> {
        let state = self.state.lock().expect("pacer lock");
        let reserved = state.channels.get(channel).copied();
        let answered = state.answered.get(channel).copied();
        reserved.into_iter().chain(answered).max()
    }

    /// Slack did not take a post to `channel` that went at `slot` (it answered 503: down,
    /// nothing done): the slot is given back unless a later post reserved after it, so
    /// when Slack returns the channel's next post goes at once instead of waiting out the
    /// second of a post that never happened (after an outage, every channel with a post
    /// waiting would otherwise lose up to a second).
    pub fn not_taken(&self, method: &str, channel: Option<&str>, slot: Instant) {
        let Some(channel) = channel.filter(|_| method == "chat.postMessage") else {
            return;
        };
        let mut state = self.state.lock().expect("pacer lock");
        let ours = slot + delta(self.settings.post_interval);
        if let Some(next) = state.channels.get_mut(channel)
            && *next == ours
        {
            *next = slot;
        }
    }

    /// Slack answered 429 for `method` (on `channel`): hold such calls until `until`.
    pub fn pause(&self, method: &str, channel: Option<&str>, until: Instant, now: Instant) {
        let mut state = self.state.lock().expect("pacer lock");
        if state.paused.len() > SWEEP_ABOVE {
            state.paused.retain(|_, u| *u > now);
        }
        let entry = state
            .paused
            .entry(pause_key(method, channel))
            .or_insert(until);
        *entry = (*entry).max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(post_interval_ms: u64, tiers: bool) -> Pacer {
        Pacer::new(PaceSettings {
            post_interval: Duration::from_millis(post_interval_ms),
            method_tiers: tiers,
            inline_wait: Duration::from_secs(1),
        })
    }

    fn at(t: Instant, ms: i64) -> Instant {
        t + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn posts_to_one_channel_are_a_second_apart_and_other_channels_are_free() {
        let p = pacer(1000, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let post = |ticket, channel, now| p.acquire("chat.postMessage", Some(channel), ticket, now);
        assert_eq!(post(1, "C1", t), Grant::Go(Duration::ZERO));
        assert_eq!(post(2, "C2", t), Grant::Go(Duration::ZERO));
        // The second post to C1 waits out the second inline...
        assert_eq!(post(3, "C1", t), Grant::Go(Duration::from_secs(1)));
        // ...a third is handed back with the slot at +2 s reserved for it...
        assert_eq!(post(4, "C1", t), Grant::Defer(Duration::from_secs(2)));
        // ...so a fourth queues behind it, and nobody takes its slot meanwhile.
        assert_eq!(post(5, "C1", t), Grant::Defer(Duration::from_secs(3)));
        assert_eq!(
            post(6, "C1", at(t, 1500)),
            Grant::Defer(Duration::from_millis(2500))
        );
        // When row 4 comes back, its slot is waiting.
        assert_eq!(post(4, "C1", at(t, 2000)), Grant::Go(Duration::ZERO));
        assert_eq!(
            post(5, "C1", at(t, 2900)),
            Grant::Go(Duration::from_millis(100))
        );
    }

    #[test]
    fn a_post_slack_did_not_take_gives_its_slot_back() {
        let p = pacer(1000, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let post = |ticket, now| p.acquire("chat.postMessage", Some("C1"), ticket, now);
        assert_eq!(post(1, t), Grant::Go(Duration::ZERO));
        // 503: the slot at t was not used; the retry goes at once.
        p.not_taken("chat.postMessage", Some("C1"), t);
        assert_eq!(post(1, at(t, 10)), Grant::Go(Duration::ZERO));
        // A slot with a later reservation after it is kept: the later post's spacing
        // holds.
        assert_eq!(post(2, at(t, 20)), Grant::Go(Duration::from_millis(990)));
        p.not_taken("chat.postMessage", Some("C1"), at(t, 10));
        assert_eq!(
            post(3, at(t, 30)),
            Grant::Defer(Duration::from_millis(1980))
        );
    }

    #[test]
    fn the_next_post_waits_a_full_interval_after_slack_answered_the_last() {
        let p = pacer(1000, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(
            p.acquire("chat.postMessage", Some("C1"), 1, t),
            Grant::Go(Duration::ZERO)
        );
        // It left late and Slack answered 600 ms after its slot.
        p.answered("chat.postMessage", Some("C1"), at(t, 600));
        assert_eq!(
            p.acquire("chat.postMessage", Some("C1"), 2, at(t, 650)),
            Grant::Go(Duration::from_millis(950))
        );
    }

    #[test]
    fn the_next_post_time_is_the_later_of_the_reserved_slot_and_the_answer() {
        let p = pacer(1000, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(p.next_post_at("C1"), None, "no post yet: not paced");
        p.acquire("chat.postMessage", Some("C1"), 1, t);
        assert_eq!(p.next_post_at("C1"), Some(at(t, 1000)));
        p.answered("chat.postMessage", Some("C1"), at(t, 600));
        assert_eq!(p.next_post_at("C1"), Some(at(t, 1600)));
        // Other methods do not pace the channel's posts.
        p.acquire("conversations.setTopic", Some("C2"), 2, t);
        assert_eq!(p.next_post_at("C2"), None);
    }

    #[test]
    fn tier_two_allows_a_minute_of_burst_then_spreads_calls_out() {
        let p = pacer(1000, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        for i in 0..20 {
            assert_eq!(
                p.acquire("conversations.setTopic", Some("C1"), i, t),
                Grant::Go(Duration::ZERO),
                "call {i}"
            );
        }
        // 20/min refills one token every 3 s: the 21st is handed back with the first
        // refilled token reserved, the 22nd gets the next one.
        assert_eq!(
            p.acquire("conversations.setTopic", Some("C1"), 21, t),
            Grant::Defer(Duration::from_secs(3))
        );
        assert_eq!(
            p.acquire("conversations.setTopic", Some("C9"), 22, t),
            Grant::Defer(Duration::from_secs(6))
        );
        assert_eq!(
            p.acquire("conversations.setTopic", Some("C1"), 21, at(t, 3000)),
            Grant::Go(Duration::ZERO)
        );
    }

    #[test]
    fn tiers_can_be_switched_off_but_posts_stay_paced() {
        let p = pacer(1000, false);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        for i in 0..100 {
            assert_eq!(
                p.acquire("conversations.setTopic", None, i, t),
                Grant::Go(Duration::ZERO)
            );
        }
        p.acquire("chat.postMessage", Some("C1"), 200, t);
        assert_eq!(
            p.acquire("chat.postMessage", Some("C1"), 201, t),
            Grant::Go(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_429_pauses_the_channel_for_posts_and_the_method_otherwise() {
        let p = pacer(0, true);
        let t = DateTime::from_timestamp(1_000_000, 0).unwrap();
        p.pause(
            "chat.postMessage",
            Some("C1"),
            t + TimeDelta::seconds(30),
            t,
        );
        p.pause(
            "conversations.setTopic",
            Some("C1"),
            t + TimeDelta::seconds(10),
            t,
        );
        assert_eq!(
            p.acquire("chat.postMessage", Some("C1"), 0, t),
            Grant::Defer(Duration::from_secs(30))
        );
        assert_eq!(
            p.acquire("chat.postMessage", Some("C2"), 0, t),
            Grant::Go(Duration::ZERO)
        );
        assert_eq!(
            p.acquire("conversations.setTopic", Some("C7"), 0, t),
            Grant::Defer(Duration::from_secs(10))
        );
    }
}

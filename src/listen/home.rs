//! The App Home tab: open incidents (severity, age, commander, next reminder, RTO left)
//! and the recovery runs waiting for the viewer's approval.
//!
//! Published through the outbox, in a lane per user (`home:U...`): opening the tab
//! (`app_home_opened`) queues a publish, and [`HomeRefresher`] queues one for everyone
//! who opened it in the last [`VIEWERS_WITHIN`] (at most [`MAX_VIEWERS`]) when incidents
//! or runs changed. A publish renders the tab as it is when delivered, so a publish
//! already waiting in a user's lane stands for any number of changes: no second one is
//! queued (coalesced).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::incident::{Incident, Role};
use crate::domain::outbound::{Outbound, home_key};
use crate::domain::timers::TimerKind;
use crate::engine::{Engine, EngineError};
use crate::store::{AwaitingRun, StoreError};

/// How long someone who opened the tab keeps getting live refreshes.
pub const VIEWERS_WITHIN: TimeDelta = TimeDelta::days(7);
/// At most this many viewers are refreshed per change (the most recent).
pub const MAX_VIEWERS: i64 = 500;
/// Incidents listed on the tab (Slack allows 100 blocks per view).
const MAX_LISTED: usize = 40;

/// `app_home_opened` on the Home tab: remember the viewer and queue a publish, with the
/// event id, in one transaction.
pub async fn opened(engine: &Engine, event_id: &str, user: &str) -> Result<(), EngineError> {
    let now = engine.now();
    let mut tx = engine.store().begin().await?;
    if !tx.record_inbound(super::SOURCE, event_id, now).await? {
        return Err(EngineError::Duplicate);
    }
    tx.record_home_viewer(user, now).await?;
    let key = home_key(user);
    if !tx.lane_has_fresh_row(&key).await? {
        let row = Outbound::PublishHome {
            user: user.to_string(),
        };
        tx.enqueue(&key, None, &row.to_json(), now).await?;
    }
    let committed = tx.commit().await?;
    engine.woke(committed);
    Ok(())
}

/// Queues a publish for every recent viewer whose lane has none waiting. Returns how
/// many were queued.
pub async fn refresh_viewers(engine: &Engine) -> Result<usize, EngineError> {
    let now = engine.now();
    let viewers = engine
        .store()
        .home_viewers(now - VIEWERS_WITHIN, MAX_VIEWERS)
        .await?;
    if viewers.is_empty() {
        return Ok(0);
    }
    let mut tx = engine.store().begin().await?;
    let mut queued = 0;
    for user in viewers {
        let key = home_key(&user);
        if tx.lane_has_fresh_row(&key).await? {
            continue;
        }
        let row = Outbound::PublishHome { user }.to_json();
        tx.enqueue(&key, None, &row, now).await?;
        queued += 1;
    }
    let committed = tx.commit().await?;
    engine.woke(committed);
    Ok(queued)
}

/// Watches for changes to incidents and runs, and refreshes recent viewers' tabs.
pub struct HomeRefresher {
    engine: Engine,
    clock: Arc<dyn Clock>,
    every: Duration,
    last: Option<(i64, i64)>,
}

impl HomeRefresher {
    /// A refresher looking every `every`.
    pub fn new(engine: Engine, clock: Arc<dyn Clock>, every: Duration) -> Self {
        Self {
            engine,
            clock,
            every,
            last: None,
        }
    }

    /// One look: when incidents or runs changed since the last look, queue refreshes.
    /// The first look only notes where things stand (tabs are published when opened).
    pub async fn check(&mut self) -> Result<usize, EngineError> {
        let marker = self.engine.store().change_marker().await?;
        let changed = self.last.is_some_and(|last| last != marker);
        self.last = Some(marker);
        if changed {
            refresh_viewers(&self.engine).await
        } else {
            Ok(0)
        }
    }

    /// Until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "App Home refresh failed; trying again next round");
            }
            let next = self.clock.now() + TimeDelta::from_std(self.every).unwrap_or_default();
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// `user`'s Home tab as it is now.
pub async fn render(engine: &Engine, user: &str) -> Result<Value, StoreError> {
    let store = engine.store();
    let now = engine.now();
    let open = store.open_incidents().await?;
    let mut rows = Vec::new();
    for incident in open.iter().rev().take(MAX_LISTED) {
        let reminder = store
            .next_timer_of(incident.id, &TimerKind::StatusReminder.key())
            .await?;
        let rto = engine.policy().severities.get(incident.severity).rto;
        rows.push(IncidentLine {
            incident: incident.clone(),
            next_reminder: reminder,
            rto_left: incident.declared_at + rto - now,
        });
    }
    let runs = store.runs_awaiting(user).await?;
    Ok(view(&rows, open.len(), &runs, now))
}

/// One incident on the tab.
#[derive(Clone, Debug)]
pub struct IncidentLine {
    /// The incident.
    pub incident: Incident,
    /// Its next status reminder, if one is planned.
    pub next_reminder: Option<DateTime<Utc>>,
    /// RTO remaining (negative: overdue).
    pub rto_left: TimeDelta,
}

/// "2h 05m", "12m", "<1m".
fn span(d: TimeDelta) -> String {
    let mins = d.num_minutes().abs();
    match (mins / 60, mins % 60) {
        (0, 0) => "<1m".into(),
        (0, m) => format!("{m}m"),
        (h, m) if h < 48 => format!("{h}h {m:02}m"),
        (h, _) => format!("{}d {}h", h / 24, h % 24),
    }
}

/// The Home view (pure; `total` is how many incidents are open, `rows` the newest).
pub fn view(
    rows: &[IncidentLine],
    total: usize,
    runs: &[AwaitingRun],
    now: DateTime<Utc>,
) -> Value {
    let section =
        |text: String| json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } });
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": "Open incidents" } }),
    ];
    if rows.is_empty() {
        blocks.push(section("No open incidents.".into()));
    }
    for line in rows {
        let i = &line.incident;
        let commander = i
            .roles
            .get(&Role::Commander)
            .map_or("*nobody*".to_string(), |u| format!("<@{u}>"));
        let channel = i
            .channel
            .as_ref()
            .map_or(String::new(), |c| format!(" <#{}>", c.id));
        let reminder = match line.next_reminder {
            Some(at) if at > now => format!("in {}", span(at - now)),
            Some(_) => "due now".into(),
            None => "none".into(),
        };
        let rto = if line.rto_left >= TimeDelta::zero() {
            format!("{} left", span(line.rto_left))
        } else {
            format!("*overdue by {}*", span(line.rto_left))
        };
        let title = i
            .title
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        blocks.push(section(format!(
            "*{} {}* {}{}\n{} · age {} · commander {} · next reminder {} · RTO {}",
            i.severity,
            i.id,
            title,
            channel,
            i.status.as_str(),
            span(now - i.declared_at),
            commander,
            reminder,
            rto
        )));
    }
    if total > rows.len() {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("…and {} older; `/incident list` shows all.", total - rows.len()) }] }));
    }
    blocks.push(json!({ "type": "divider" }));
    blocks.push(json!({ "type": "header", "text": { "type": "plain_text", "text": "Waiting for your approval" } }));
    if runs.is_empty() {
        blocks.push(section("Nothing waits for you.".into()));
    }
    for run in runs.iter().take(MAX_LISTED) {
        let expires = if run.expires_at > now {
            format!("expires in {}", span(run.expires_at - now))
        } else {
            "expired".into()
        };
        blocks.push(section(format!(
            "*Run #{}* `{}` for {} requested by <@{}> · {} (approve from its message in the incident channel)",
            run.id, run.command, run.incident_id, run.requester, expires
        )));
    }
    json!({ "type": "home", "blocks": blocks })
}

//! Klaxon's rules, with no I/O: incidents, severities, the slash-command grammar, the
//! timeline's hash chain and the words of every message.
//!
//! Nothing in here may import tokio, sqlx, axum, slack-morphism, kube or the AWS SDK, or
//! read the clock: time comes in as an argument (STYLE.md §5).

pub mod access;
pub mod approval;
pub mod calendar;
pub mod channel_name;
pub mod command;
pub mod declare_offer;
pub mod escalation;
pub mod incident;
pub mod message;
pub mod narrative;
pub mod outbound;
pub mod pagerduty;
pub mod postmortem;
pub mod record;
pub mod regulatory;
pub mod render;
pub mod response_times;
pub mod severity;
pub mod stakeholders;
pub mod text;
pub mod timeline;
pub mod timers;

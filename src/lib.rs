//! Klaxon: an incident-response bot for Slack. See ARCHITECTURE.md for the data flow.

pub mod app;
pub mod background;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod paging;
pub mod scheduler;
pub mod slack;
pub mod store;
pub mod tls;
pub mod totp;

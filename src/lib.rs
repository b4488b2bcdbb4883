//! Klaxon: an incident-response bot for Slack. See ARCHITECTURE.md for the data flow.

pub mod domain;
pub mod slack;

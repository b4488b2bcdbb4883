//! The real [`MorphismSlack`] client posting with Klaxon's message metadata and finding such
//! a post again (`conversations.history` / `.replies` with `include_all_metadata`), against
//! the emulator with its clock.

#[path = "support/slack_emulator.rs"]
mod slack_emulator;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon::clock::{Clock, ManualClock};
use klaxon::slack::morphism::MorphismSlack;
use klaxon::slack::{MessageTag, SlackApi};
use serde_json::json;
use slack_emulator::SlackEmulator;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn setup() -> (SlackEmulator, MorphismSlack, Arc<ManualClock>) {
    let emulator = SlackEmulator::start().await;
    let clock = Arc::new(ManualClock::new(start()));
    emulator.use_clock(clock.clone());
    let client =
        MorphismSlack::new(&emulator.base_url, "xoxb-t".to_owned().into()).expect("client");
    (emulator, client, clock)
}

fn tag(row: i64) -> MessageTag {
    MessageTag {
        install: "install-a".into(),
        row,
        also: Vec::new(),
    }
}

fn blocks(text: &str) -> serde_json::Value {
    json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
}

#[tokio::test]
async fn a_tagged_post_is_found_by_its_row_and_install_only() {
    let (emulator, client, clock) = setup().await;
    let channel = emulator.add_channel("incident-response", "UADMIN", "");
    let before = clock.now();
    clock.advance(TimeDelta::seconds(1));
    let ts = client
        .post_tagged(&channel, "hello", &blocks("hello"), None, &tag(7))
        .await
        .unwrap();
    let post = &emulator.calls_to("chat.postMessage")[0];
    assert_eq!(post["metadata"]["event_type"], "klaxon_outbox");
    assert_eq!(post["metadata"]["event_payload"]["row"], 7);
    assert_eq!(
        client
            .find_tagged(&channel, None, before, &tag(7))
            .await
            .unwrap(),
        Some(ts)
    );
    let history = &emulator.calls_to("conversations.history")[0];
    assert_eq!(history["include_all_metadata"], "true", "{history}");
    assert_eq!(
        client
            .find_tagged(&channel, None, before, &tag(8))
            .await
            .unwrap(),
        None
    );
    let other_install = MessageTag {
        install: "install-b".into(),
        row: 7,
        also: Vec::new(),
    };
    assert_eq!(
        client
            .find_tagged(&channel, None, before, &other_install)
            .await
            .unwrap(),
        None
    );
    // Nothing posted after `oldest`: not found.
    let later = clock.now() + TimeDelta::seconds(5);
    assert_eq!(
        client
            .find_tagged(&channel, None, later, &tag(7))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn the_search_pages_through_a_busy_channel() {
    let (emulator, client, clock) = setup().await;
    let channel = emulator.add_channel("incident-response", "UADMIN", "");
    let before = clock.now();
    let ts = client
        .post_tagged(&channel, "mine", &blocks("mine"), None, &tag(1))
        .await
        .unwrap();
    for i in 0..450 {
        client
            .post_tagged(&channel, "other", &blocks("other"), None, &tag(100 + i))
            .await
            .unwrap();
    }
    assert_eq!(
        client
            .find_tagged(&channel, None, before, &tag(1))
            .await
            .unwrap(),
        Some(ts)
    );
    // 451 messages, newest first, 200 a page: the oldest is on the third page.
    assert_eq!(emulator.calls_to("conversations.history").len(), 3);
}

#[tokio::test]
async fn a_thread_reply_is_found_in_its_thread() {
    let (emulator, client, clock) = setup().await;
    let channel = emulator.add_channel("general", "UADMIN", "");
    let before = clock.now();
    let parent = client
        .post_message(&channel, "question", &blocks("question"), None)
        .await
        .unwrap();
    let reply = client
        .post_tagged(
            &channel,
            "answer",
            &blocks("answer"),
            Some(&parent),
            &tag(5),
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .find_tagged(&channel, Some(&parent), before, &tag(5))
            .await
            .unwrap(),
        Some(reply)
    );
    assert_eq!(emulator.calls_to("conversations.replies").len(), 1);
    // The channel history does not list thread replies.
    assert_eq!(
        client
            .find_tagged(&channel, None, before, &tag(5))
            .await
            .unwrap(),
        None
    );
}

//! The real [`MorphismSlack`] client against the Slack emulator: request shapes, answers and
//! the mapping of Slack's failures onto [`SlackError`].

#[path = "support/slack_emulator.rs"]
mod slack_emulator;

use std::time::Duration;

use klaxon::slack::morphism::MorphismSlack;
use klaxon::slack::{SlackApi, SlackError};
use serde_json::json;
use slack_emulator::{BOT_USER_ID, Failure, SlackEmulator};

const TOKEN: &str = "xoxb-emulated-secret-token";

async fn setup() -> (SlackEmulator, MorphismSlack) {
    let emulator = SlackEmulator::start().await;
    let client = MorphismSlack::new(&emulator.base_url, TOKEN.to_owned().into()).expect("client");
    (emulator, client)
}

fn section(text: &str) -> serde_json::Value {
    json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}])
}

#[tokio::test]
async fn bot_user_id_comes_from_auth_test_and_is_cached() {
    let (emulator, client) = setup().await;
    assert_eq!(client.bot_user_id().await.unwrap(), BOT_USER_ID);
    assert_eq!(client.bot_user_id().await.unwrap(), BOT_USER_ID);
    assert_eq!(emulator.calls_to("auth.test").len(), 1);
}

#[tokio::test]
async fn every_call_sends_the_bearer_token() {
    let (emulator, client) = setup().await;
    client.bot_user_id().await.unwrap();
    let id = client.create_channel("inc-1-token").await.unwrap().id;
    client.set_topic(&id, "t").await.unwrap();
    client
        .post_message(&id, "hi", &section("hi"), None)
        .await
        .unwrap();
    let calls = emulator.calls();
    assert_eq!(calls.len(), 4);
    for call in calls {
        assert_eq!(call.bearer_token.as_deref(), Some(TOKEN), "{}", call.method);
    }
}

#[tokio::test]
async fn create_channel_returns_the_new_channel() {
    let (emulator, client) = setup().await;
    let info = client.create_channel("inc-42-db-down").await.unwrap();
    assert_eq!(info.name, "inc-42-db-down");
    assert_eq!(info.creator.as_deref(), Some(BOT_USER_ID));
    assert_eq!(info.purpose, "");
    let stored = emulator.channel(&info.id).expect("stored");
    assert_eq!(stored.name, "inc-42-db-down");
    assert_eq!(stored.members, vec![BOT_USER_ID.to_owned()]);
    let body = &emulator.calls_to("conversations.create")[0];
    assert_eq!(body["name"], "inc-42-db-down");
    assert_eq!(body["is_private"], false);
}

#[tokio::test]
async fn name_taken_is_a_permanent_api_error() {
    let (emulator, client) = setup().await;
    emulator.add_channel("inc-7", "UHUMAN", "");
    let err = client.create_channel("inc-7").await.unwrap_err();
    assert!(
        matches!(&err, SlackError::Api { code } if code == "name_taken"),
        "{err:?}"
    );
    assert!(err.is_permanent());
    assert!(emulator.calls()[0].failed);
    assert!(emulator.calls_to("conversations.create").is_empty());
}

#[tokio::test]
async fn invalid_channel_names_are_rejected_like_slack() {
    let (_emulator, client) = setup().await;
    let err = client.create_channel("Inc 7!").await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_name_specials"));
    let err = client.create_channel(&"a".repeat(81)).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_name_maxlength"));
}

#[tokio::test]
async fn rate_limit_maps_retry_after() {
    let (emulator, client) = setup().await;
    emulator.fail_next(
        "conversations.create",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    let err = client.create_channel("inc-8").await.unwrap_err();
    match err {
        SlackError::RateLimited { retry_after } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // The failure was used up: the retry succeeds.
    assert_eq!(client.create_channel("inc-8").await.unwrap().name, "inc-8");
    let calls = emulator.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].failed && !calls[1].failed);
}

#[tokio::test]
async fn http_500_is_a_transient_transport_error_without_the_token() {
    let (emulator, client) = setup().await;
    emulator.fail_next("chat.postMessage", Failure::Status(500));
    let err = client
        .post_message("CINCRESP", "hi", &section("hi"), None)
        .await
        .unwrap_err();
    match &err {
        SlackError::Transport(msg) => {
            assert!(msg.contains("500"), "{msg}");
            assert!(!msg.contains(TOKEN), "{msg}");
        }
        other => panic!("expected Transport, got {other:?}"),
    }
    assert!(!err.is_permanent());
    assert!(!format!("{client:?}").contains(TOKEN));
}

#[tokio::test]
async fn http_503_is_slack_unavailable_and_transient() {
    let (emulator, client) = setup().await;
    emulator.fail_next("chat.postMessage", Failure::Status(503));
    let err = client
        .post_message("CINCRESP", "hi", &section("hi"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SlackError::Unavailable(msg) if msg.contains("503") && !msg.contains(TOKEN)),
        "{err:?}"
    );
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn injected_api_errors_and_unreachable_server() {
    let (emulator, client) = setup().await;
    emulator.fail_next("auth.test", Failure::Error("invalid_auth"));
    let err = client.bot_user_id().await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_auth"));
    // A failed auth.test is not cached.
    assert_eq!(client.bot_user_id().await.unwrap(), BOT_USER_ID);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dead = MorphismSlack::new(
        &format!("http://127.0.0.1:{port}/api"),
        TOKEN.to_owned().into(),
    )
    .unwrap();
    let err = dead.bot_user_id().await.unwrap_err();
    assert!(
        matches!(&err, SlackError::Transport(msg) if !msg.contains(TOKEN)),
        "{err:?}"
    );
}

#[tokio::test]
async fn find_channel_by_name_follows_cursors() {
    let (emulator, client) = setup().await;
    for i in 0..250 {
        emulator.add_channel(&format!("general-{i}"), "UHUMAN", "");
    }
    let id = emulator.add_channel("inc-9-late", BOT_USER_ID, "klaxon:incident:9");
    let found = client
        .find_channel_by_name("inc-9-late")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.id, id);
    assert_eq!(found.creator.as_deref(), Some(BOT_USER_ID));
    assert_eq!(found.purpose, "klaxon:incident:9");

    let pages = emulator.calls_to("conversations.list");
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0]["limit"], "200");
    assert_eq!(pages[0]["types"], "public_channel");
    assert_eq!(pages[0]["exclude_archived"], "true");
    assert!(pages[0].get("cursor").is_none());
    assert!(pages[1]["cursor"].as_str().is_some_and(|c| !c.is_empty()));

    assert_eq!(
        client
            .find_channel_by_name("no-such-channel")
            .await
            .unwrap(),
        None
    );
    assert_eq!(emulator.calls_to("conversations.list").len(), 4);
}

#[tokio::test]
async fn purpose_and_topic_are_set() {
    let (emulator, client) = setup().await;
    let id = client.create_channel("inc-10").await.unwrap().id;
    client.set_purpose(&id, "klaxon:incident:10").await.unwrap();
    client.set_topic(&id, "SEV1 | db down").await.unwrap();
    let stored = emulator.channel(&id).unwrap();
    assert_eq!(stored.purpose, "klaxon:incident:10");
    assert_eq!(stored.topic, "SEV1 | db down");
    let err = client.set_topic("CNOPE", "x").await.unwrap_err();
    assert_eq!(err.code(), Some("channel_not_found"));
    assert!(err.is_permanent());
}

#[tokio::test]
async fn invite_adds_members_and_ignores_already_in_channel() {
    let (emulator, client) = setup().await;
    let id = client.create_channel("inc-11").await.unwrap().id;
    let users = vec!["UALICE".to_owned(), "UBOB".to_owned()];
    client.invite(&id, &users).await.unwrap();
    assert_eq!(
        emulator.calls_to("conversations.invite")[0]["users"],
        "UALICE,UBOB"
    );
    // Everyone already there: Slack says already_in_channel, the client says Ok.
    client.invite(&id, &users).await.unwrap();
    client.invite(&id, &["UALICE".to_owned()]).await.unwrap();
    // A batch refused because one user is already in: retried one by one.
    emulator.fail_next("conversations.invite", Failure::Error("already_in_channel"));
    client
        .invite(
            &id,
            &[
                "UALICE".to_owned(),
                "UCAROL".to_owned(),
                "UCAROL".to_owned(),
            ],
        )
        .await
        .unwrap();
    let members = emulator.channel(&id).unwrap().members;
    assert_eq!(members, vec![BOT_USER_ID, "UALICE", "UBOB", "UCAROL"]);
    // Empty list: no call at all.
    let before = emulator.calls().len();
    client.invite(&id, &[]).await.unwrap();
    assert_eq!(emulator.calls().len(), before);

    let err = client.invite("CNOPE", &users).await.unwrap_err();
    assert_eq!(err.code(), Some("channel_not_found"));
}

#[tokio::test]
async fn post_message_stores_blocks_and_threads() {
    let (emulator, client) = setup().await;
    let first = client
        .post_message("CINCRESP", "Incident declared", &section("*SEV1*"), None)
        .await
        .unwrap();
    let reply = client
        .post_message("CINCRESP", "update", &section("update"), Some(&first))
        .await
        .unwrap();
    assert!(reply > first, "{reply} <= {first}");
    let channel = emulator.channel("CINCRESP").expect("auto-created");
    assert_eq!(channel.messages.len(), 2);
    assert_eq!(channel.messages[0]["text"], "Incident declared");
    assert_eq!(channel.messages[0]["blocks"][0]["text"]["text"], "*SEV1*");
    assert_eq!(channel.messages[1]["thread_ts"], first.as_str());
    let bodies = emulator.calls_to("chat.postMessage");
    assert_eq!(bodies[1]["thread_ts"], first.as_str());
    assert!(bodies[0].get("thread_ts").is_none());
}

#[tokio::test]
async fn invalid_blocks_are_permanent_and_never_sent() {
    let (emulator, client) = setup().await;
    let err = client
        .post_message("CINCRESP", "x", &json!({"type": "section"}), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_blocks"));
    assert!(err.is_permanent());
    let err = client
        .open_view("trig", &json!({"type": "modal"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_blocks"));
    assert!(emulator.calls().is_empty());
}

#[tokio::test]
async fn open_view_sends_the_modal() {
    let (emulator, client) = setup().await;
    let view = json!({
        "type": "modal",
        "callback_id": "declare",
        "title": {"type": "plain_text", "text": "Declare incident"},
        "submit": {"type": "plain_text", "text": "Declare"},
        "blocks": [{
            "type": "input",
            "block_id": "title",
            "label": {"type": "plain_text", "text": "Title"},
            "element": {"type": "plain_text_input", "action_id": "title"}
        }]
    });
    client.open_view("1234.5678.abcd", &view).await.unwrap();
    let body = &emulator.calls_to("views.open")[0];
    assert_eq!(body["trigger_id"], "1234.5678.abcd");
    assert_eq!(body["view"]["type"], "modal");
    assert_eq!(body["view"]["callback_id"], "declare");
    assert_eq!(body["view"]["blocks"][0]["element"]["action_id"], "title");
}

#[tokio::test]
async fn wait_for_calls_sees_calls_made_concurrently() {
    let (emulator, client) = setup().await;
    let poster = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..3 {
            let text = format!("update {i}");
            client
                .post_message("CINCRESP", &text, &section(&text), None)
                .await
                .unwrap();
        }
    });
    let bodies = emulator.wait_for_calls("chat.postMessage", 3).await;
    assert_eq!(bodies[2]["text"], "update 2");
    poster.await.unwrap();
    let stored = emulator
        .channel_by_name("cincresp")
        .expect("auto-created by the post");
    assert_eq!(stored.id, "CINCRESP");
}

#[tokio::test]
async fn constructor_rejects_other_schemes() {
    assert!(MorphismSlack::new("ftp://example.com/api", TOKEN.to_owned().into()).is_err());
}

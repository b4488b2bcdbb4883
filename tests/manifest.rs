//! Issue 11: `klaxon slack-manifest` prints a manifest whose URLs are routes the server
//! serves, whose scopes are exactly those of the Slack methods the code calls and the
//! events it handles (the method list is checked against the source, so a new call
//! without its scope fails here), and whose Socket Mode variant has no URLs.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use klaxon::slack::methods::{BOT_EVENTS, METHODS, bot_scopes};
use serde_json::Value;
use support::{Db, TestApp};

fn manifest(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .arg("slack-manifest")
        .args(args)
        .env_remove("KLAXON_CONFIG")
        .output()
        .expect("run klaxon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Slack method name the source passes to a call: the outbox's paced
/// `self.slack("method", ...)`, and the client's `http_post` / `http_get` / `map_error` /
/// `post_for_ok`.
fn methods_called_in_source() -> BTreeSet<String> {
    let call = regex::Regex::new(
        r#"(?:\.slack|http_post(?:::<[^>]*>)?|http_get|map_error|post_for_ok)\(\s*"([a-z]+\.[A-Za-z.]+)""#,
    )
    .unwrap();
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for cap in call.captures_iter(&text) {
            found.insert(cap[1].to_string());
        }
    }
    found
}

#[test]
fn the_method_list_is_exactly_what_the_code_calls() {
    let called = methods_called_in_source();
    let listed: BTreeSet<String> = METHODS.iter().map(|(m, _)| m.to_string()).collect();
    assert!(called.len() >= 10, "the scan found too little: {called:?}");
    let unlisted: Vec<_> = called.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "called but not in slack::methods::METHODS (no scope in the manifest): {unlisted:?}"
    );
    let unused: Vec<_> = listed.difference(&called).collect();
    assert!(
        unused.is_empty(),
        "in METHODS but never called (a scope asked for nothing): {unused:?}"
    );
}

#[test]
fn every_subscribed_event_has_a_handler() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let handlers = std::fs::read_to_string(root.join("http/events.rs")).unwrap()
        + &std::fs::read_to_string(root.join("listen/mod.rs")).unwrap();
    for (event, _) in BOT_EVENTS {
        let kind = event.split('.').next().unwrap();
        assert!(
            handlers.contains(&format!("\"{kind}\"")),
            "subscribed to {event} but no handler matches \"{kind}\""
        );
    }
}

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    let request = Request::post(path).body(Body::from("{}")).unwrap();
    app.send(request).await.0
}

#[tokio::test]
async fn the_http_manifest_names_served_routes_and_the_scopes_in_use() {
    let (code, out, err) = manifest(&["--url", "https://klaxon.example.com/", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(&out).expect("JSON manifest");
    let scopes: Vec<&str> = m["oauth_config"]["scopes"]["bot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(scopes, bot_scopes());
    for needed in [
        "commands",
        "chat:write",
        "channels:manage",
        "channels:history",
        "reactions:read",
        "users:read",
    ] {
        assert!(scopes.contains(&needed), "{needed} missing: {scopes:?}");
    }
    let command = &m["features"]["slash_commands"][0];
    assert_eq!(command["command"], "/incident");
    assert_eq!(command["should_escape"], true);
    let events: Vec<&str> = m["settings"]["event_subscriptions"]["bot_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "app_mention",
            "app_home_opened",
            "message.channels",
            "reaction_added",
            "pin_added",
        ]
    );
    assert_eq!(m["features"]["app_home"]["home_tab_enabled"], true);
    assert_eq!(m["settings"]["socket_mode_enabled"], false);

    // Every URL is a route the server serves (behind the signature check: 401, not 404).
    let app = TestApp::start(Db::Sqlite).await;
    let urls = [
        command["url"].as_str().unwrap(),
        m["settings"]["event_subscriptions"]["request_url"]
            .as_str()
            .unwrap(),
        m["settings"]["interactivity"]["request_url"]
            .as_str()
            .unwrap(),
    ];
    for url in urls {
        let path = url
            .strip_prefix("https://klaxon.example.com")
            .unwrap_or_else(|| panic!("{url} is not under --url"));
        assert_eq!(
            status_of(&app, path).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        status_of(&app, "/slack/nothing").await,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_socket_mode_manifest_is_yaml_without_urls() {
    let (code, out, err) = manifest(&["--socket-mode"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("socket_mode_enabled: true"), "{out}");
    assert!(!out.contains("request_url"), "{out}");
    assert!(!out.contains("url:"), "{out}");
    assert!(out.contains("    - \"reactions:read\""), "{out}");
    assert!(
        out.contains("  slash_commands:\n    - command: \"/incident\""),
        "{out}"
    );
}

#[test]
fn a_bad_url_is_refused_with_the_rule() {
    let (code, _, err) = manifest(&["--url", "http://klaxon.example.com"]);
    assert_eq!(code, 2);
    assert!(err.contains("must start with https://"), "{err}");
    let (code, _, err) = manifest(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("--url"), "{err}");
}

//! `klaxon slack-manifest`: the Slack app manifest
//! (<https://api.slack.com/reference/manifests>) for exactly what Klaxon serves and calls:
//! the `/incident` command, interactivity, the bot events of [`super::methods::BOT_EVENTS`]
//! and the scopes of [`super::methods::bot_scopes`]. With Socket Mode the request URLs are
//! left out (Slack delivers over the socket) and `socket_mode_enabled` is set.

use serde_json::{Value, json};

use super::methods::{BOT_EVENTS, bot_scopes};

/// Where Slack posts slash commands.
pub const COMMANDS_PATH: &str = "/slack/commands";
/// Where Slack posts interactions (buttons, forms).
pub const INTERACTIONS_PATH: &str = "/slack/interactions";
/// Where Slack posts Events API callbacks.
pub const EVENTS_PATH: &str = "/slack/events";

/// How the app is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Slack calls `https://HOST/slack/...`.
    Http {
        /// Base URL, e.g. `https://klaxon.example.com`.
        base_url: String,
    },
    /// Klaxon connects out (`SLACK_APP_TOKEN`); no public URL.
    SocketMode,
}

/// Checks a `--url` argument: https, a host, no query or fragment.
pub fn base_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("https://") else {
        return Err(format!(
            "--url must start with https:// (Slack only calls https URLs), got `{url}`"
        ));
    };
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "--url must be a base URL like https://klaxon.example.com, got `{url}`"
        ));
    }
    Ok(trimmed.to_string())
}

/// The manifest as JSON.
pub fn manifest(transport: &Transport) -> Value {
    let url = |path: &str| match transport {
        Transport::Http { base_url } => Some(format!("{base_url}{path}")),
        Transport::SocketMode => None,
    };
    let mut command = json!({
        "command": "/incident",
        "description": "Declare and run incidents",
        "usage_hint": "declare sev1 Database is down | help",
        "should_escape": true,
    });
    let mut events = json!({
        "bot_events": BOT_EVENTS.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
    });
    let mut interactivity = json!({ "is_enabled": true });
    if let Some(u) = url(COMMANDS_PATH) {
        command["url"] = Value::String(u);
    }
    if let Some(u) = url(EVENTS_PATH) {
        events["request_url"] = Value::String(u);
    }
    if let Some(u) = url(INTERACTIONS_PATH) {
        interactivity["request_url"] = Value::String(u);
    }
    json!({
        "_metadata": { "major_version": 1, "minor_version": 1 },
        "display_information": {
            "name": "Klaxon",
            "description": "Incident response: declare, coordinate, escalate, recover.",
            "background_color": "#b3261e",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": true,
                "messages_tab_enabled": false,
                "messages_tab_read_only_enabled": false,
            },
            "bot_user": { "display_name": "Klaxon", "always_online": true },
            "slash_commands": [command],
        },
        "oauth_config": { "scopes": { "bot": bot_scopes() } },
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": false,
            "socket_mode_enabled": *transport == Transport::SocketMode,
            "token_rotation_enabled": false,
        },
    })
}

/// `value` as block-style YAML. Every string is written as a JSON string (valid YAML,
/// and nothing in it can be read as another type or break the structure).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    other => out.push_str(&format!("{pad}{key}: {}\n", scalar(other))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        write_yaml(item, indent + 2, &mut inner);
                        // The first key goes on the dash line.
                        let inner = inner.replacen(&format!("{pad}  "), &format!("{pad}- "), 1);
                        out.push_str(&inner);
                    }
                    other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_socket_mode_differ_only_in_urls_and_the_switch() {
        let http = manifest(&Transport::Http {
            base_url: "https://k.example.com".into(),
        });
        assert_eq!(
            http["features"]["slash_commands"][0]["url"],
            "https://k.example.com/slack/commands"
        );
        assert_eq!(
            http["settings"]["interactivity"]["request_url"],
            "https://k.example.com/slack/interactions"
        );
        assert_eq!(http["settings"]["socket_mode_enabled"], false);
        let socket = manifest(&Transport::SocketMode);
        assert!(socket["features"]["slash_commands"][0].get("url").is_none());
        assert!(
            socket["settings"]["event_subscriptions"]
                .get("request_url")
                .is_none()
        );
        assert_eq!(socket["settings"]["socket_mode_enabled"], true);
        assert_eq!(
            http["oauth_config"], socket["oauth_config"],
            "same scopes either way"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            base_url("https://k.example.com/").unwrap(),
            "https://k.example.com"
        );
        assert!(base_url("http://k.example.com").is_err());
        assert!(base_url("https://").is_err());
        assert!(base_url("https://k?x=1").is_err());
    }

    #[test]
    fn yaml_is_block_style_with_json_strings() {
        let y = to_yaml(&json!({"a": {"b": ["x", "y"], "c": [{"d": 1, "e": "f"}]}, "g": true}));
        assert_eq!(
            y,
            "a:\n  b:\n    - \"x\"\n    - \"y\"\n  c:\n    - d: 1\n      e: \"f\"\ng: true\n"
        );
    }
}

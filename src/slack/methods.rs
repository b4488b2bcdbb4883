//! The one list of Slack Web API methods Klaxon calls and the events it subscribes to,
//! with the OAuth scope each needs. The app manifest (`klaxon slack-manifest`) takes its
//! scopes from here, and `tests/manifest.rs` checks this list against every method name
//! the client and the outbox actually call, so a new call without its scope fails a test
//! instead of failing in a workspace.

/// `(method, bot scope it needs)`; `None` for methods that need none.
pub const METHODS: &[(&str, Option<&str>)] = &[
    ("auth.test", None),
    ("conversations.create", Some("channels:manage")),
    ("conversations.list", Some("channels:read")),
    ("conversations.setPurpose", Some("channels:manage")),
    ("conversations.setTopic", Some("channels:manage")),
    ("conversations.invite", Some("channels:manage")),
    ("conversations.history", Some("channels:history")),
    ("files.getUploadURLExternal", Some("files:write")),
    ("files.completeUploadExternal", Some("files:write")),
    ("conversations.replies", Some("channels:history")),
    ("chat.postMessage", Some("chat:write")),
    ("chat.postEphemeral", Some("chat:write")),
    ("chat.update", Some("chat:write")),
    ("usergroups.users.list", Some("usergroups:read")),
    ("users.info", Some("users:read")),
    ("users.lookupByEmail", Some("users:read.email")),
    ("views.open", None),
    ("views.publish", None),
];

/// `(bot event, scope it needs)`: what `src/http/events.rs` handles.
pub const BOT_EVENTS: &[(&str, Option<&str>)] = &[
    ("app_mention", Some("app_mentions:read")),
    ("app_home_opened", None),
    ("message.channels", Some("channels:history")),
    ("reaction_added", Some("reactions:read")),
    ("pin_added", Some("pins:read")),
];

/// The scope of the slash command.
pub const COMMANDS_SCOPE: &str = "commands";

/// The app-level token's scope for Socket Mode (`apps.connections.open`).
pub const SOCKET_MODE_SCOPE: &str = "connections:write";

/// Every bot scope Klaxon needs, sorted, without repeats.
pub fn bot_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&str> = METHODS
        .iter()
        .chain(BOT_EVENTS)
        .filter_map(|(_, scope)| *scope)
        .chain([COMMANDS_SCOPE])
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_sorted_unique_and_include_the_command() {
        let scopes = bot_scopes();
        assert!(scopes.contains(&"commands"));
        assert!(scopes.contains(&"reactions:read"));
        assert!(scopes.windows(2).all(|w| w[0] < w[1]), "{scopes:?}");
    }
}

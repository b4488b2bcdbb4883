//! The `/incident` grammar: turns the text after the slash command into a typed
//! [`SlashCommand`], or a [`ParseError`] that says what was wrong and shows the usage.
//!
//! ```text
//! /incident declare [--security] [<sev1-4> <title...>]   (no arguments: a form opens)
//! /incident role <commander|comms|ops|scribe> @user
//! /incident sev <1-4>
//! /incident status <investigating|identified|monitoring>
//! /incident update [--public|--preview] <text...>
//! /incident security
//! /incident ack-regulatory
//! /incident resolve [<summary...>]          (no summary: a form asks for one)
//! /incident run [<command> key=value ...]   (no command: lists the approved ones)
//! /incident timeline [<page>]
//! /incident note <text...>
//! /incident action <text...> [@owner] [due YYYY-MM-DD]
//! /incident rpo <minutes of data lost>
//! /incident postmortem
//! /incident list
//! /incident help
//! ```
//! The same table ([`USAGES`]) produces `/incident help`, so help and parser cannot drift.

use std::fmt;

use super::incident::{Role, Status};
use super::severity::Severity;

/// A parsed `/incident` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlashCommand {
    /// Declare an incident; `None` opens the declaration form.
    Declare(Option<(Severity, String)>),
    /// `declare --security <sev> <title>`: a security incident from the start.
    DeclareSecurity(Severity, String),
    /// Flag the incident as a security incident.
    Security,
    /// Confirm compliance/legal were notified (stops the regulatory reminders).
    AckRegulatory,
    /// Assign or hand over a role.
    Role {
        /// Which role.
        role: Role,
        /// Slack user id of the new holder.
        user: String,
    },
    /// Change severity.
    Sev(Severity),
    /// Change status.
    Status(Status),
    /// Post a status update.
    Update(String),
    /// Resolve; `None` opens a form asking for the summary.
    Resolve(Option<String>),
    /// Run an approved recovery command; `None` lists the catalog.
    Run {
        /// Catalog command name.
        command: Option<String>,
        /// The `key=value` arguments, unparsed (the catalog knows their types).
        args: String,
    },
    /// List open incidents.
    List,
    /// Show help.
    Help,
    /// Show the timeline, one page (from 1) at a time.
    Timeline(u32),
    /// Add a note to the timeline.
    Note(String),
    /// Record an action item (`<text> [@owner] [due YYYY-MM-DD]`, parsed by
    /// `domain::record::parse_action`).
    Action(String),
    /// Record how many minutes of data were lost (for the RPO verdict).
    Rpo(u32),
    /// Write the post-mortem draft now and upload it to the channel.
    Postmortem,
}

impl SlashCommand {
    /// Whether the command acts on one incident and so must be used in its channel.
    pub fn needs_incident_channel(&self) -> bool {
        matches!(
            self,
            SlashCommand::Role { .. }
                | SlashCommand::Sev(_)
                | SlashCommand::Status(_)
                | SlashCommand::Update(_)
                | SlashCommand::Resolve(_)
                | SlashCommand::Run {
                    command: Some(_),
                    ..
                }
                | SlashCommand::Timeline(_)
                | SlashCommand::Note(_)
                | SlashCommand::Action(_)
                | SlashCommand::Rpo(_)
                | SlashCommand::Postmortem
                | SlashCommand::Security
                | SlashCommand::AckRegulatory
        )
    }

    /// The subcommand's name, for logs and spans.
    pub fn name(&self) -> &'static str {
        match self {
            SlashCommand::Declare(_) | SlashCommand::DeclareSecurity(..) => "declare",
            SlashCommand::Security => "security",
            SlashCommand::AckRegulatory => "ack-regulatory",
            SlashCommand::Role { .. } => "role",
            SlashCommand::Sev(_) => "sev",
            SlashCommand::Status(_) => "status",
            SlashCommand::Update(_) => "update",
            SlashCommand::Resolve(_) => "resolve",
            SlashCommand::Run { .. } => "run",
            SlashCommand::List => "list",
            SlashCommand::Help => "help",
            SlashCommand::Timeline(_) => "timeline",
            SlashCommand::Note(_) => "note",
            SlashCommand::Action(_) => "action",
            SlashCommand::Rpo(_) => "rpo",
            SlashCommand::Postmortem => "postmortem",
        }
    }
}

/// One line of help.
#[derive(Debug, PartialEq, Eq)]
pub struct Usage {
    /// Subcommand name.
    pub name: &'static str,
    /// Syntax after `/incident`.
    pub syntax: &'static str,
    /// What it does.
    pub about: &'static str,
}

/// Every subcommand, in help order.
pub const USAGES: &[Usage] = &[
    Usage {
        name: "declare",
        syntax: "declare [--security] [<sev1|sev2|sev3|sev4> <title>]",
        about: "Declare an incident and open its channel (no arguments: a form opens; --security: compliance/legal must be notified).",
    },
    Usage {
        name: "role",
        syntax: "role <commander|comms|ops|scribe> @user",
        about: "Assign or hand over a role (in the incident channel).",
    },
    Usage {
        name: "sev",
        syntax: "sev <1-4>",
        about: "Change the severity (in the incident channel).",
    },
    Usage {
        name: "status",
        syntax: "status <investigating|identified|monitoring>",
        about: "Change the status (in the incident channel).",
    },
    Usage {
        name: "update",
        syntax: "update [--public|--preview] <text>",
        about: "Post a status update (in the incident channel); it goes to the internal stakeholder groups. --public: external groups too (customers, status page), redacted, after a preview here. --preview: only show what each group would receive.",
    },
    Usage {
        name: "security",
        syntax: "security",
        about: "Flag the incident as a security incident: compliance/legal must be notified within 24 hours; reminders until acknowledged.",
    },
    Usage {
        name: "ack-regulatory",
        syntax: "ack-regulatory",
        about: "Confirm compliance/legal were notified of this security incident (stops the reminders).",
    },
    Usage {
        name: "resolve",
        syntax: "resolve [<one-line summary>]",
        about: "Resolve the incident (no summary: a form asks for one).",
    },
    Usage {
        name: "run",
        syntax: "run <command> [key=value ...]",
        about: "Run an approved recovery command after a second person approves (in the incident channel; no command: list them).",
    },
    Usage {
        name: "timeline",
        syntax: "timeline [<page>]",
        about: "Show the incident's timeline, newest page last (only you see it).",
    },
    Usage {
        name: "note",
        syntax: "note <text>",
        about: "Add a note to the timeline (pinning a message does too).",
    },
    Usage {
        name: "action",
        syntax: "action <text> [@owner] [due YYYY-MM-DD]",
        about: "Record an action item for the post-mortem.",
    },
    Usage {
        name: "rpo",
        syntax: "rpo <minutes of data lost>",
        about: "Record how much data was lost, for the post-mortem's RPO verdict.",
    },
    Usage {
        name: "postmortem",
        syntax: "postmortem",
        about: "Write the post-mortem draft from the record now and upload it here.",
    },
    Usage {
        name: "list",
        syntax: "list",
        about: "List open incidents (only you see the answer).",
    },
    Usage {
        name: "help",
        syntax: "help",
        about: "Show this help.",
    },
];

/// The help text for `/incident help` and for unknown subcommands.
pub fn help_text() -> String {
    let mut text = String::from("*Klaxon* — `/incident` commands:\n");
    for u in USAGES {
        text.push_str(&format!("• `/incident {}` — {}\n", u.syntax, u.about));
    }
    text
}

/// Why the text did not parse, with the usage of the subcommand it was meant for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong, naming the argument and the rule.
    pub problem: String,
    /// The usage of the subcommand, or `None` when the subcommand itself is unknown.
    pub usage: Option<&'static Usage>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.usage {
            Some(u) => write!(f, "{}\nUsage: `/incident {}`", self.problem, u.syntax),
            None => write!(f, "{}\n{}", self.problem, help_text()),
        }
    }
}

fn usage(name: &str) -> &'static Usage {
    USAGES
        .iter()
        .find(|u| u.name == name)
        .expect("every subcommand has a usage line")
}

fn error(name: &str, problem: impl Into<String>) -> ParseError {
    ParseError {
        problem: problem.into(),
        usage: Some(usage(name)),
    }
}

/// Parses a Slack user reference: `<@U123>`, `<@U123|alice>` (what Slack sends when the
/// command escapes users) or a bare id `U123`.
pub fn parse_user(token: &str) -> Option<String> {
    let id = match token.strip_prefix("<@").and_then(|t| t.strip_suffix('>')) {
        Some(inner) => inner.split('|').next().unwrap_or_default(),
        None => token,
    };
    let valid = id.len() >= 2
        && id.len() <= 32
        && (id.starts_with('U') || id.starts_with('W'))
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    valid.then(|| id.to_string())
}

/// Parses the text after `/incident`.
pub fn parse(text: &str) -> Result<SlashCommand, ParseError> {
    let text = text.trim();
    let (sub, rest) = match text.split_once(char::is_whitespace) {
        Some((sub, rest)) => (sub, rest.trim()),
        None => (text, ""),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    match sub.to_ascii_lowercase().as_str() {
        "" | "help" => Ok(SlashCommand::Help),
        "list" => match words.as_slice() {
            [] => Ok(SlashCommand::List),
            _ => Err(error("list", "`list` takes no arguments.")),
        },
        "declare" if rest.starts_with("--security") => {
            let rest = rest["--security".len()..].trim();
            match parse(&format!("declare {rest}"))? {
                SlashCommand::Declare(Some((severity, title))) => {
                    Ok(SlashCommand::DeclareSecurity(severity, title))
                }
                _ => Err(error(
                    "declare",
                    "--security needs a severity and a title: `declare --security sev2 Leaked credentials`.",
                )),
            }
        }
        "security" => match words.as_slice() {
            [] => Ok(SlashCommand::Security),
            _ => Err(error("security", "`security` takes no arguments.")),
        },
        "ack-regulatory" => match words.as_slice() {
            [] => Ok(SlashCommand::AckRegulatory),
            _ => Err(error("ack-regulatory", "`ack-regulatory` takes no arguments.")),
        },
        "declare" => {
            let Some((first, title)) = rest.split_once(char::is_whitespace).or(if rest.is_empty() {
                None
            } else {
                Some((rest, ""))
            }) else {
                return Ok(SlashCommand::Declare(None));
            };
            let severity = Severity::parse(first).ok_or_else(|| {
                error("declare", format!("severity: `{first}` is not one of sev1, sev2, sev3, sev4."))
            })?;
            let title = title.trim();
            if title.is_empty() {
                return Err(error("declare", "title: a title is required after the severity."));
            }
            Ok(SlashCommand::Declare(Some((severity, title.to_string()))))
        }
        "role" => match words.as_slice() {
            [role, user] => {
                let role = Role::parse(role).ok_or_else(|| {
                    error("role", format!("role: `{role}` is not one of commander, comms, ops, scribe."))
                })?;
                let user = parse_user(user).ok_or_else(|| {
                    error(
                        "role",
                        format!("user: `{user}` is not a user mention. Mention someone with @ (the /incident command must have \"Escape channels, users, and links\" turned on)."),
                    )
                })?;
                Ok(SlashCommand::Role { role, user })
            }
            _ => Err(error("role", format!("`role` takes a role and a user ({} given).", words.len()))),
        },
        "sev" | "severity" => match words.as_slice() {
            [sev] => Severity::parse(sev)
                .map(SlashCommand::Sev)
                .ok_or_else(|| error("sev", format!("severity: `{sev}` is not between 1 and 4."))),
            _ => Err(error("sev", format!("`sev` takes exactly one severity ({} given).", words.len()))),
        },
        "status" => match words.as_slice() {
            [status] => Status::parse_settable(status).map(SlashCommand::Status).ok_or_else(|| {
                let hint = if status.eq_ignore_ascii_case("resolved") {
                    " To resolve, use `/incident resolve`."
                } else {
                    ""
                };
                error(
                    "status",
                    format!("status: `{status}` is not one of investigating, identified, monitoring.{hint}"),
                )
            }),
            _ => Err(error("status", format!("`status` takes exactly one status ({} given).", words.len()))),
        },
        "update" => {
            if rest.is_empty() {
                Err(error("update", "text: the update text is required."))
            } else {
                Ok(SlashCommand::Update(rest.to_string()))
            }
        }
        "resolve" => Ok(SlashCommand::Resolve((!rest.is_empty()).then(|| rest.to_string()))),
        "run" => {
            let (command, args) = match rest.split_once(char::is_whitespace) {
                Some((command, args)) => (Some(command.to_string()), args.trim().to_string()),
                None => ((!rest.is_empty()).then(|| rest.to_string()), String::new()),
            };
            Ok(SlashCommand::Run { command, args })
        }
        "timeline" => match words.as_slice() {
            [] => Ok(SlashCommand::Timeline(1)),
            [page] => match page.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(SlashCommand::Timeline(n)),
                _ => Err(error("timeline", format!("page: `{page}` is not a page number (1, 2, ...)."))),
            },
            _ => Err(error("timeline", format!("`timeline` takes at most a page number ({} given).", words.len()))),
        },
        "note" => {
            if rest.is_empty() {
                Err(error("note", "text: the note text is required."))
            } else {
                Ok(SlashCommand::Note(rest.to_string()))
            }
        }
        "action" => {
            if rest.is_empty() {
                Err(error("action", "text: say what is to be done."))
            } else {
                Ok(SlashCommand::Action(rest.to_string()))
            }
        }
        "rpo" => match words.as_slice() {
            [minutes] => minutes
                .trim_end_matches("min")
                .parse::<u32>()
                .map(SlashCommand::Rpo)
                .map_err(|_| error("rpo", format!("minutes: `{minutes}` is not a whole number of minutes (0 when no data was lost)."))),
            _ => Err(error("rpo", format!("`rpo` takes exactly one number of minutes ({} given).", words.len()))),
        },
        "postmortem" | "post-mortem" => match words.as_slice() {
            [] => Ok(SlashCommand::Postmortem),
            _ => Err(error("postmortem", "`postmortem` takes no arguments.")),
        },
        other => Err(ParseError {
            problem: format!("`{other}` is not an /incident command."),
            usage: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declare_inline_or_with_a_form() {
        assert_eq!(
            parse("declare sev1 Database is down"),
            Ok(SlashCommand::Declare(Some((
                Severity::Sev1,
                "Database is down".into()
            ))))
        );
        assert_eq!(parse("declare"), Ok(SlashCommand::Declare(None)));
        assert_eq!(
            parse("  DECLARE   2   API slow "),
            Ok(SlashCommand::Declare(Some((
                Severity::Sev2,
                "API slow".into()
            ))))
        );
    }

    #[test]
    fn declare_errors_name_the_field_and_show_usage() {
        let err = parse("declare sev9 Database").unwrap_err();
        assert!(err.problem.starts_with("severity: `sev9`"), "{err}");
        assert!(err.to_string().contains("Usage: `/incident declare"));
        let err = parse("declare sev1").unwrap_err();
        assert!(err.problem.starts_with("title:"), "{err}");
    }

    #[test]
    fn role_takes_an_escaped_mention() {
        assert_eq!(
            parse("role commander <@U024BE7LH|bob>"),
            Ok(SlashCommand::Role {
                role: Role::Commander,
                user: "U024BE7LH".into()
            })
        );
        assert_eq!(
            parse("role ic <@W1>"),
            Ok(SlashCommand::Role {
                role: Role::Commander,
                user: "W1".into()
            })
        );
        assert!(
            parse("role pilot <@U1>")
                .unwrap_err()
                .problem
                .starts_with("role: `pilot`")
        );
        assert!(
            parse("role comms @bob")
                .unwrap_err()
                .problem
                .starts_with("user: `@bob`")
        );
        assert!(parse("role comms").is_err());
    }

    #[test]
    fn sev_status_update_resolve() {
        assert_eq!(parse("sev 2"), Ok(SlashCommand::Sev(Severity::Sev2)));
        assert!(
            parse("sev 5")
                .unwrap_err()
                .problem
                .contains("between 1 and 4")
        );
        assert_eq!(
            parse("status Identified"),
            Ok(SlashCommand::Status(Status::Identified))
        );
        assert!(
            parse("status resolved")
                .unwrap_err()
                .problem
                .contains("/incident resolve")
        );
        assert_eq!(
            parse("update Rolled back v42"),
            Ok(SlashCommand::Update("Rolled back v42".into()))
        );
        assert!(parse("update").is_err());
        assert_eq!(parse("resolve"), Ok(SlashCommand::Resolve(None)));
        assert_eq!(
            parse("resolve Failed over"),
            Ok(SlashCommand::Resolve(Some("Failed over".into())))
        );
    }

    #[test]
    fn unknown_subcommand_shows_all_commands() {
        let err = parse("explode now").unwrap_err();
        assert_eq!(err.usage, None);
        let text = err.to_string();
        assert!(text.contains("`explode` is not an /incident command"));
        for u in USAGES {
            assert!(text.contains(u.syntax), "{}", u.syntax);
        }
        assert_eq!(parse(""), Ok(SlashCommand::Help));
    }

    #[test]
    fn record_commands() {
        assert_eq!(parse("timeline"), Ok(SlashCommand::Timeline(1)));
        assert_eq!(parse("timeline 3"), Ok(SlashCommand::Timeline(3)));
        assert!(
            parse("timeline 0")
                .unwrap_err()
                .problem
                .starts_with("page: `0`")
        );
        assert_eq!(
            parse("note DB CPU at 100%"),
            Ok(SlashCommand::Note("DB CPU at 100%".into()))
        );
        assert!(parse("note").unwrap_err().problem.starts_with("text:"));
        assert_eq!(
            parse("action Add alert <@U1> due 2026-12-01"),
            Ok(SlashCommand::Action(
                "Add alert <@U1> due 2026-12-01".into()
            ))
        );
        assert_eq!(parse("rpo 20"), Ok(SlashCommand::Rpo(20)));
        assert!(
            parse("rpo lots")
                .unwrap_err()
                .problem
                .starts_with("minutes: `lots`")
        );
        assert_eq!(parse("postmortem"), Ok(SlashCommand::Postmortem));
        assert!(SlashCommand::Postmortem.needs_incident_channel());
    }

    #[test]
    fn user_ids_are_validated() {
        assert_eq!(parse_user("<@U1ABC>"), Some("U1ABC".into()));
        assert_eq!(parse_user("U1ABC"), Some("U1ABC".into()));
        assert_eq!(parse_user("<@U1; rm -rf />"), None);
        assert_eq!(parse_user("<@C123>"), None);
    }
}

//! What each `/incident` subcommand does, whether it arrived as a slash command or as an
//! @mention in a channel. Handlers parse and authenticate; this runs the command through
//! the engine and returns the text to show the person who asked.

use crate::commands::{params, render as run_render};
use crate::domain::access::{self, Rule};
use crate::domain::command::{self, SlashCommand};
use crate::domain::incident::{Change, Incident, Role};
use crate::domain::outbound::Modal;
use crate::engine::{EngineError, RequestMeta, RoleRequest};
use crate::slack::render;
use crate::store::NewRun;

use super::AppState;

/// Where and by whom a command was given.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// Slack user id.
    pub user: String,
    /// Channel the command was typed in.
    pub channel: String,
    /// Present for slash commands: lets Klaxon open a form.
    pub trigger_id: Option<String>,
    /// Request id for the timeline and error references.
    pub request_id: String,
    /// Inbound event to process at most once (Events API), consumed by the first write.
    pub dedupe: Option<(String, String)>,
}

impl Invocation {
    fn meta(&self) -> RequestMeta {
        RequestMeta {
            dedupe: self.dedupe.clone(),
            ..RequestMeta::user(&self.user, &self.request_id)
        }
    }
}

/// The answer to the person who asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Text (Slack mrkdwn); empty when a form opens instead.
    pub text: String,
    /// Whether a write already recorded the invocation's dedupe key.
    pub dedupe_consumed: bool,
}

impl Reply {
    fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            dedupe_consumed: false,
        }
    }
    fn after_write(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            dedupe_consumed: true,
        }
    }
}

/// Runs a parsed command. `Err` is only for internal failures; refusals are replies.
pub async fn run(
    state: &AppState,
    inv: &Invocation,
    cmd: SlashCommand,
) -> Result<Reply, EngineError> {
    let engine = &state.engine;
    let result = match cmd {
        SlashCommand::Help => return Ok(Reply::text(command::help_text())),
        SlashCommand::List => return list(state).await,
        SlashCommand::Run { command: None, .. } => return Ok(Reply::text(catalog_list(state))),
        // Answered once the declaration is durable; its channel, posts and timers are
        // written right after (see engine::intake).
        SlashCommand::Declare(Some((severity, title))) => engine
            .declare_acked(&inv.meta(), severity, &title, false)
            .await
            .map(|o| Reply::after_write(o.reply)),
        SlashCommand::DeclareSecurity(severity, title) => engine
            .declare_acked(&inv.meta(), severity, &title, true)
            .await
            .map(|o| Reply::after_write(o.reply)),
        SlashCommand::Declare(None) => {
            return open_form(
                state,
                inv,
                Modal::Declare {
                    channel: inv.channel.clone(),
                },
                "Give a severity and a title: `declare sev1 Database is down`.",
            )
            .await;
        }
        other => {
            let incident = match engine.store().incident_by_channel(&inv.channel).await? {
                Some(incident) => incident,
                None => {
                    return Ok(Reply::text(
                        not_in_incident_channel(state, other.name()).await?,
                    ));
                }
            };
            let change = match other {
                SlashCommand::Role { role, user } => {
                    return assign_role(state, inv, &incident, role, user).await;
                }
                record @ (SlashCommand::Timeline(_)
                | SlashCommand::Note(_)
                | SlashCommand::Action(_)
                | SlashCommand::Rpo(_)
                | SlashCommand::Postmortem) => {
                    return super::record_commands::run(state, inv, &incident, record).await;
                }
                SlashCommand::Sev(s) => Change::ChangeSeverity(s),
                SlashCommand::Status(s) => Change::SetStatus(s),
                SlashCommand::Update(text) => Change::PostUpdate(text),
                SlashCommand::Security => Change::MarkSecurity,
                SlashCommand::AckRegulatory => Change::AckRegulatory,
                SlashCommand::Resolve(Some(summary)) => Change::Resolve(summary),
                SlashCommand::Resolve(None) => {
                    if !incident.is_open() {
                        return Ok(Reply::text(format!("{} is already resolved.", incident.id)));
                    }
                    let hint = "Give a one-line summary: `resolve Failed over to the replica`.";
                    return open_form(
                        state,
                        inv,
                        Modal::Resolve {
                            incident_id: incident.id,
                        },
                        hint,
                    )
                    .await;
                }
                SlashCommand::Run {
                    command: Some(name),
                    args,
                } => {
                    return match request_run(state, inv, &incident, &name, &args).await {
                        Err(EngineError::Refused(refusal)) => Ok(Reply::text(refusal.to_string())),
                        other => other,
                    };
                }
                SlashCommand::Help
                | SlashCommand::List
                | SlashCommand::Declare(_)
                | SlashCommand::DeclareSecurity(..)
                | SlashCommand::Run { command: None, .. } => {
                    unreachable!("handled above")
                }
            };
            engine
                .change(&inv.meta(), incident.id, change)
                .await
                .map(|o| Reply::after_write(o.reply))
        }
    };
    match result {
        Ok(reply) => Ok(reply),
        Err(EngineError::Refused(refusal)) => Ok(Reply::text(refusal.to_string())),
        Err(EngineError::NotFound(id)) => Ok(Reply::text(format!("{id} does not exist."))),
        Err(e) => Err(e),
    }
}

fn catalog_list(state: &AppState) -> String {
    let lines = state.catalog.list_lines();
    if lines.is_empty() {
        return "No recovery commands are approved (the catalog is empty).".into();
    }
    let mut text = String::from(
        "*Approved recovery commands* — `/incident run <command> key=value ...` in an incident channel:\n",
    );
    for line in lines {
        text.push_str(&format!("• {line}\n"));
    }
    text
}

/// The roles `user` holds in `incident`.
pub fn roles_of(incident: &Incident, user: &str) -> Vec<Role> {
    incident
        .roles
        .iter()
        .filter(|(_, holder)| holder.as_str() == user)
        .map(|(role, _)| *role)
        .collect()
}

/// `/incident run <command> key=value ...`: validates against the catalog, then stores
/// the run; its preview and approval request follow through the outbox.
async fn request_run(
    state: &AppState,
    inv: &Invocation,
    incident: &Incident,
    name: &str,
    args: &str,
) -> Result<Reply, EngineError> {
    let Some(spec) = state.catalog.get(name) else {
        let known: Vec<&str> = state.catalog.iter().map(|s| s.name.as_str()).collect();
        return Ok(Reply::text(format!(
            "`{name}` is not an approved command. Approved: {}.",
            known.join(", ")
        )));
    };
    let groups = state
        .groups
        .groups_of(&inv.user, &spec.requesters.groups)
        .await;
    let kind = state
        .groups
        .user_kind(&inv.user, state.identity.team_id.as_deref())
        .await;
    let Some(kind) = kind else {
        return Ok(Reply::text(format!(
            "You may not request `{name}` right now: Klaxon could not check your account with Slack (users.info failed). Try again in a moment."
        )));
    };
    let rule = Rule {
        users: &spec.requesters.users,
        groups: &spec.requesters.groups,
        roles: &spec.requesters.roles,
    };
    let allowed = access::may_request(
        rule,
        &inv.user,
        kind,
        &groups,
        &roles_of(incident, &inv.user),
        || spec.requesters.describe(),
    );
    if let Err(refusal) = allowed {
        return Ok(Reply::text(format!(
            "You may not request `{name}`: {refusal}."
        )));
    }
    let parsed = params::parse_args(args).and_then(|args| params::validate(spec, &args));
    let params = match parsed {
        Ok(p) => p,
        Err(e) => {
            return Ok(Reply::text(format!(
                "{e}\nUsage: `/incident run {name} {}`",
                usage_of(spec)
            )));
        }
    };
    let params_json = serde_json::to_string(&params).expect("params serialize");
    let expires_in =
        chrono::TimeDelta::from_std(spec.expires_in).unwrap_or(chrono::TimeDelta::minutes(15));
    let run = NewRun {
        incident_id: incident.id,
        command: &spec.name,
        action: spec.action.as_str(),
        params: &params_json,
        requester: &inv.user,
        required: spec.approvals,
        expires_at: state.engine.now() + expires_in,
    };
    // Who may approve is fixed now: today's role holders and group members.
    let approvers = Rule {
        users: &spec.approvers.users,
        groups: &spec.approvers.groups,
        roles: &spec.approvers.roles,
    };
    let members = state.groups.members_of(&spec.approvers.groups).await;
    let eligible = access::eligible_approvers(approvers, &incident.roles, &members);
    let run_id = state
        .engine
        .request_run(
            &inv.meta(),
            &run,
            &run_render::params_line(&params),
            &eligible,
        )
        .await?;
    Ok(Reply::after_write(format!(
        "Run #{run_id} `{name}` requested: the preview{} follows in this channel.",
        if spec.approvals > 0 {
            " and approval request"
        } else {
            ""
        }
    )))
}

/// `/incident role <role> @user`: the access rules decide (in the engine, under the
/// incident's lock) with the account kinds and admin membership gathered here.
async fn assign_role(
    state: &AppState,
    inv: &Invocation,
    incident: &Incident,
    role: Role,
    user: String,
) -> Result<Reply, EngineError> {
    let team = state.identity.team_id.as_deref();
    let actor_kind = state.groups.user_kind(&inv.user, team).await;
    let target_kind = if role == Role::Commander && user != inv.user {
        state.groups.user_kind(&user, team).await
    } else {
        actor_kind
    };
    let actor_is_admin = !state
        .groups
        .groups_of(&inv.user, &state.identity.incident_admins)
        .await
        .is_empty();
    let request = RoleRequest {
        role,
        user,
        actor_kind,
        actor_is_admin,
        target_kind,
    };
    match state
        .engine
        .assign_role(&inv.meta(), incident.id, request)
        .await
    {
        Ok(outcome) => Ok(Reply::after_write(outcome.reply)),
        Err(EngineError::Refused(refusal)) => Ok(Reply::text(refusal.to_string())),
        Err(e) => Err(e),
    }
}

fn usage_of(spec: &crate::commands::catalog::CommandSpec) -> String {
    spec.param_names()
        .iter()
        .map(|n| format!("{n}=…"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long the handler waits for `views.open`. Slack's trigger id expires 3 s after the
/// command and Slack wants the command answered within 3 s too.
const FORM_DEADLINE: std::time::Duration = std::time::Duration::from_millis(2_500);

/// Opens a form right from the request (no state changes, so nothing to store first):
/// queued behind other deliveries, the trigger id could expire before it was used. When
/// Slack cannot open it, the person is told so, with the text form of the command.
async fn open_form(
    state: &AppState,
    inv: &Invocation,
    modal: Modal,
    without_form: &str,
) -> Result<Reply, EngineError> {
    let Some(trigger_id) = &inv.trigger_id else {
        return Ok(Reply::text(without_form));
    };
    let view = render::modal(&modal);
    let opened = tokio::time::timeout(FORM_DEADLINE, state.slack.open_view(trigger_id, &view));
    let problem = match opened.await {
        Ok(Ok(())) => return Ok(Reply::text("")),
        Ok(Err(e)) => {
            tracing::warn!(request_id = %inv.request_id, error = %e, "views.open failed");
            match e.code() {
                Some("expired_trigger_id") => {
                    "the form's trigger expired before Slack got it".to_string()
                }
                _ => format!("Slack did not open it ({e})"),
            }
        }
        Err(_) => {
            tracing::warn!(request_id = %inv.request_id, "views.open did not answer in time");
            "Slack did not answer in time".to_string()
        }
    };
    Ok(Reply::text(format!(
        "The form could not be opened: {problem}. {without_form}"
    )))
}

async fn list(state: &AppState) -> Result<Reply, EngineError> {
    let open = state.engine.store().open_incidents().await?;
    if open.is_empty() {
        return Ok(Reply::text("No open incidents."));
    }
    let mut text = format!(
        "*{} open incident{}:*\n",
        open.len(),
        if open.len() == 1 { "" } else { "s" }
    );
    for incident in &open {
        text.push_str("• ");
        text.push_str(&render::spans(
            &crate::domain::render::incident_line(incident),
            None,
        ));
        text.push('\n');
    }
    Ok(Reply::text(text))
}

/// The answer when a command that acts on one incident is used outside an incident
/// channel; names the incident it would have meant when only one is open.
async fn not_in_incident_channel(state: &AppState, name: &str) -> Result<String, EngineError> {
    let open = state.engine.store().open_incidents().await?;
    let mut text =
        format!("`/incident {name}` works in an incident's own channel, and this is not one.");
    match open.as_slice() {
        [] => text.push_str(" There are no open incidents."),
        [only] => text.push_str(&format!(
            " Did you mean {}? Run it in {}.",
            only.id,
            channel_link(only)
        )),
        many => text.push_str(&format!(
            " {} incidents are open; `/incident list` shows their channels.",
            many.len()
        )),
    }
    Ok(text)
}

fn channel_link(incident: &Incident) -> String {
    match &incident.channel {
        Some(c) => format!("<#{}>", c.id),
        None => format!("#{}", incident.planned_channel_name),
    }
}

//! Who may do what: request, approve, deny or cancel a recovery run, and assign or hand
//! over each incident role.
//!
//! Pure rules over inputs the caller gathers (the incident's roles, the person's Slack user
//! groups and account kind, the frozen set of eligible approvers). Handlers and the engine
//! ask here; nothing here reads Slack, the database or a clock.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::incident::Role;

/// What kind of Slack account someone has, from `users.info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A full member of the app's own workspace.
    Regular,
    /// A multi-channel guest (`is_restricted`).
    Restricted,
    /// A single-channel guest (`is_ultra_restricted`).
    UltraRestricted,
    /// Someone from another workspace (Slack Connect: `is_stranger`, or a different
    /// `team_id`).
    External,
    /// A bot or app user.
    Bot,
}

impl UserKind {
    /// Classifies an account from the `users.info` flags; `our_team` is the app's
    /// workspace. Deleted accounts count as external: they belong to nobody any more.
    pub fn classify(flags: &UserFlags, our_team: Option<&str>) -> UserKind {
        if flags.is_bot {
            UserKind::Bot
        } else if flags.is_stranger
            || flags.deleted
            || matches!((our_team, flags.team_id.as_deref()), (Some(ours), Some(theirs)) if ours != theirs)
        {
            UserKind::External
        } else if flags.is_ultra_restricted {
            UserKind::UltraRestricted
        } else if flags.is_restricted {
            UserKind::Restricted
        } else {
            UserKind::Regular
        }
    }

    /// Words for refusals.
    pub fn describe(self) -> &'static str {
        match self {
            UserKind::Regular => "a workspace member",
            UserKind::Restricted => "a guest (multi-channel) account",
            UserKind::UltraRestricted => "a guest (single-channel) account",
            UserKind::External => "an account from another workspace",
            UserKind::Bot => "a bot",
        }
    }
}

/// The `users.info` flags Klaxon reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFlags {
    /// The user's home workspace.
    pub team_id: Option<String>,
    /// `is_restricted`.
    pub is_restricted: bool,
    /// `is_ultra_restricted`.
    pub is_ultra_restricted: bool,
    /// `is_stranger` (Slack Connect).
    pub is_stranger: bool,
    /// `is_bot` (or an app user).
    pub is_bot: bool,
    /// `deleted`.
    pub deleted: bool,
}

/// Why someone may eligibly approve a run, as recorded with the frozen set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    /// Named in the command's `approvers.users`.
    User,
    /// Held this incident role when the run was requested.
    Role(Role),
    /// Member of this Slack user group when the run was requested.
    Group(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::User => f.write_str("user"),
            Source::Role(role) => write!(f, "role:{}", role.as_str()),
            Source::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// One eligible approver and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Eligible {
    /// Slack user id.
    pub user: String,
    /// Why.
    pub source: Source,
}

/// A command's approver (or requester) rule, as the domain sees it.
#[derive(Clone, Copy, Debug)]
pub struct Rule<'a> {
    /// Named users.
    pub users: &'a [String],
    /// Named user groups.
    pub groups: &'a [String],
    /// Named incident roles.
    pub roles: &'a [Role],
}

impl Rule<'_> {
    /// Whether the rule names nobody.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.roles.is_empty()
    }
}

/// The approvers of a run, frozen at request time: users named by the rule, holders of
/// the named roles now, and members of the named groups now (`members` maps each group
/// the caller could read to its members; an unreadable group contributes nobody: the rule
/// fails closed). The requester is kept when eligible (the store refuses them anyway).
pub fn eligible_approvers(
    rule: Rule<'_>,
    roles: &BTreeMap<Role, String>,
    members: &BTreeMap<String, Vec<String>>,
) -> Vec<Eligible> {
    let mut out = Vec::new();
    for user in rule.users {
        out.push(Eligible {
            user: user.clone(),
            source: Source::User,
        });
    }
    for role in rule.roles {
        if let Some(holder) = roles.get(role) {
            out.push(Eligible {
                user: holder.clone(),
                source: Source::Role(*role),
            });
        }
    }
    for group in rule.groups {
        for member in members.get(group).into_iter().flatten() {
            out.push(Eligible {
                user: member.clone(),
                source: Source::Group(group.clone()),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why someone may not act on a run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunRefusal {
    /// Guests, external accounts and bots take no part in recovery commands.
    #[error("{0} cannot request or approve recovery commands")]
    Account(&'static str),
    /// The requester rule does not name them.
    #[error("requesters are {0}")]
    NotRequester(String),
}

/// Whether `kind`, with `user_groups` and `user_roles`, may request a command with
/// requester `rule` (an empty rule: anyone in the channel).
pub fn may_request(
    rule: Rule<'_>,
    user: &str,
    kind: UserKind,
    user_groups: &[String],
    user_roles: &[Role],
    describe: impl FnOnce() -> String,
) -> Result<(), RunRefusal> {
    if kind != UserKind::Regular {
        return Err(RunRefusal::Account(kind.describe()));
    }
    let named = rule.users.iter().any(|u| u == user)
        || rule.groups.iter().any(|g| user_groups.contains(g))
        || rule.roles.iter().any(|r| user_roles.contains(r));
    if rule.is_empty() || named {
        Ok(())
    } else {
        Err(RunRefusal::NotRequester(describe()))
    }
}

/// Who is asking to change a role, as far as the rules care.
#[derive(Clone, Debug)]
pub struct RoleActor<'a> {
    /// Slack user id.
    pub user: &'a str,
    /// Their account kind.
    pub kind: UserKind,
    /// Whether they are in a configured incident-admin user group.
    pub is_admin: bool,
}

/// Why a role change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RoleRefusal {
    /// Guests, external accounts and bots cannot change roles.
    #[error("roles can only be changed by workspace members, and you are {0}")]
    Account(String),
    /// Only the commander (or an incident admin) hands command over.
    #[error(
        "only the incident commander <@{0}> or an incident admin can hand over command; ask them to run `/incident role commander @you`"
    )]
    NotCommander(String),
    /// A held role is handed over by its holder, the commander or an admin.
    #[error(
        "the {role} is <@{holder}>; only they, the incident commander or an incident admin can hand it over"
    )]
    Held {
        /// Role title.
        role: String,
        /// Current holder.
        holder: String,
    },
    /// Appointing someone else to a vacant role is the commander's call.
    #[error(
        "only the incident commander <@{0}> or an incident admin can appoint someone else; you may take a vacant role yourself"
    )]
    Appoint(String),
    /// Without a commander, people may take command themselves but not appoint others.
    #[error(
        "nobody commands this incident: take command yourself with `/incident role commander @you`, or ask an incident admin to appoint someone"
    )]
    AppointWithoutCommand,
    /// The commander must be a full member.
    #[error("the incident commander must be a workspace member, and <@{0}> is not")]
    TargetAccount(String),
}

/// Whether `actor` may give `role` to `target` in an incident whose roles are `roles`.
///
/// - Guests, external accounts and bots change nothing.
/// - An incident admin may assign any role to anyone (the commander must be a member).
/// - Command is handed over by the current commander. Without a commander, anyone may
///   take command themselves (someone must, and it grants no approval of runs already
///   requested: their approvers were frozen), but not appoint someone else.
/// - Other roles: the commander may assign them; a vacant role may be taken by anyone for
///   themselves; a held role is handed over by its holder.
pub fn may_assign_role(
    roles: &BTreeMap<Role, String>,
    actor: &RoleActor<'_>,
    role: Role,
    target: &str,
    target_kind: Option<UserKind>,
) -> Result<(), RoleRefusal> {
    if actor.kind != UserKind::Regular {
        return Err(RoleRefusal::Account(actor.kind.describe().to_string()));
    }
    if role == Role::Commander && target_kind.is_some_and(|k| k != UserKind::Regular) {
        return Err(RoleRefusal::TargetAccount(target.to_string()));
    }
    if actor.is_admin {
        return Ok(());
    }
    let commander = roles.get(&Role::Commander).map(String::as_str);
    let is_commander = commander == Some(actor.user);
    match (role, commander) {
        (Role::Commander, Some(current)) if !is_commander => {
            Err(RoleRefusal::NotCommander(current.to_string()))
        }
        (Role::Commander, Some(_)) => Ok(()),
        (Role::Commander, None) if target == actor.user => Ok(()),
        (Role::Commander, None) => Err(RoleRefusal::AppointWithoutCommand),
        (_, _) if is_commander => Ok(()),
        (role, _) => match roles.get(&role) {
            Some(holder) if holder != actor.user => Err(RoleRefusal::Held {
                role: role.title().to_string(),
                holder: holder.clone(),
            }),
            Some(_) => Ok(()),
            None if target == actor.user => Ok(()),
            None if commander.is_none() => Err(RoleRefusal::AppointWithoutCommand),
            None => Err(RoleRefusal::Appoint(
                commander.unwrap_or_default().to_string(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(pairs: &[(Role, &str)]) -> BTreeMap<Role, String> {
        pairs.iter().map(|(r, u)| (*r, u.to_string())).collect()
    }

    fn member(user: &str) -> RoleActor<'_> {
        RoleActor {
            user,
            kind: UserKind::Regular,
            is_admin: false,
        }
    }

    #[test]
    fn a_bystander_cannot_take_command_from_the_commander() {
        let r = roles(&[(Role::Commander, "UALICE")]);
        assert_eq!(
            may_assign_role(&r, &member("UMALLORY"), Role::Commander, "UMALLORY", None),
            Err(RoleRefusal::NotCommander("UALICE".into()))
        );
        assert_eq!(
            may_assign_role(&r, &member("UALICE"), Role::Commander, "UBOB", None),
            Ok(())
        );
        let admin = RoleActor {
            is_admin: true,
            ..member("UADMIN")
        };
        assert_eq!(
            may_assign_role(&r, &admin, Role::Commander, "UBOB", None),
            Ok(())
        );
    }

    #[test]
    fn without_a_commander_people_take_command_only_for_themselves() {
        let r = roles(&[]);
        assert_eq!(
            may_assign_role(&r, &member("UBOB"), Role::Commander, "UBOB", None),
            Ok(())
        );
        assert_eq!(
            may_assign_role(&r, &member("UBOB"), Role::Commander, "UCAROL", None),
            Err(RoleRefusal::AppointWithoutCommand)
        );
    }

    #[test]
    fn other_roles_are_taken_when_vacant_and_handed_over_by_their_holder() {
        let r = roles(&[(Role::Commander, "UALICE"), (Role::Ops, "UBOB")]);
        assert_eq!(
            may_assign_role(&r, &member("UCAROL"), Role::Scribe, "UCAROL", None),
            Ok(())
        );
        assert_eq!(
            may_assign_role(&r, &member("UCAROL"), Role::Scribe, "UDAVE", None),
            Err(RoleRefusal::Appoint("UALICE".into()))
        );
        assert!(matches!(
            may_assign_role(&r, &member("UCAROL"), Role::Ops, "UCAROL", None),
            Err(RoleRefusal::Held { .. })
        ));
        assert_eq!(
            may_assign_role(&r, &member("UBOB"), Role::Ops, "UDAVE", None),
            Ok(())
        );
        assert_eq!(
            may_assign_role(&r, &member("UALICE"), Role::Ops, "UDAVE", None),
            Ok(())
        );
    }

    #[test]
    fn guests_and_outsiders_change_no_roles_and_cannot_command() {
        let r = roles(&[]);
        for kind in [
            UserKind::Restricted,
            UserKind::UltraRestricted,
            UserKind::External,
            UserKind::Bot,
        ] {
            let guest = RoleActor {
                kind,
                ..member("UGUEST")
            };
            assert!(may_assign_role(&r, &guest, Role::Commander, "UGUEST", None).is_err());
        }
        assert_eq!(
            may_assign_role(
                &r,
                &member("UBOB"),
                Role::Commander,
                "UBOB",
                Some(UserKind::External)
            ),
            Err(RoleRefusal::TargetAccount("UBOB".into()))
        );
    }

    #[test]
    fn accounts_are_classified_from_users_info() {
        let flags = |f: fn(&mut UserFlags)| {
            let mut u = UserFlags {
                team_id: Some("T1".into()),
                ..UserFlags::default()
            };
            f(&mut u);
            UserKind::classify(&u, Some("T1"))
        };
        assert_eq!(flags(|_| {}), UserKind::Regular);
        assert_eq!(flags(|u| u.is_restricted = true), UserKind::Restricted);
        assert_eq!(
            flags(|u| {
                u.is_restricted = true;
                u.is_ultra_restricted = true
            }),
            UserKind::UltraRestricted
        );
        assert_eq!(flags(|u| u.is_stranger = true), UserKind::External);
        assert_eq!(flags(|u| u.team_id = Some("T2".into())), UserKind::External);
        assert_eq!(flags(|u| u.is_bot = true), UserKind::Bot);
    }

    #[test]
    fn eligibility_records_each_source_at_request_time() {
        let users = vec!["UNAMED".to_string()];
        let groups = vec!["S1".to_string(), "SUNREAD".to_string()];
        let rule_roles = vec![Role::Commander, Role::Comms];
        let rule = Rule {
            users: &users,
            groups: &groups,
            roles: &rule_roles,
        };
        let members = BTreeMap::from([("S1".to_string(), vec!["UG1".to_string()])]);
        let got = eligible_approvers(rule, &roles(&[(Role::Commander, "UALICE")]), &members);
        let shown: Vec<String> = got
            .iter()
            .map(|e| format!("{}@{}", e.user, e.source))
            .collect();
        assert_eq!(
            shown,
            ["UALICE@role:commander", "UG1@group:S1", "UNAMED@user"]
        );
    }

    #[test]
    fn guests_cannot_request_and_empty_rules_admit_members() {
        let none: Vec<String> = vec![];
        let empty = Rule {
            users: &none,
            groups: &none,
            roles: &[],
        };
        assert_eq!(
            may_request(empty, "U1", UserKind::Regular, &[], &[], String::new),
            Ok(())
        );
        assert!(may_request(empty, "U1", UserKind::Restricted, &[], &[], String::new).is_err());
        let ops = [Role::Ops];
        let rule = Rule {
            users: &none,
            groups: &none,
            roles: &ops,
        };
        assert!(may_request(rule, "U1", UserKind::Regular, &[], &[], || "x".into()).is_err());
        assert_eq!(
            may_request(
                rule,
                "U1",
                UserKind::Regular,
                &[],
                &[Role::Ops],
                String::new
            ),
            Ok(())
        );
    }
}

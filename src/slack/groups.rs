//! Which Slack user groups a person belongs to, for recovery-command policies that name
//! groups (`approvers.groups = ["S0123"]`).
//!
//! Membership is read with `usergroups.users.list` when a policy needs it (a read, not a
//! side effect, so it happens on the request path rather than through the outbox) and
//! cached for a minute: an approval click should not wait on Slack twice. A failed lookup
//! counts as "not a member": a policy fails closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::SlackApi;

/// How long a group's member list is trusted.
const TTL: Duration = Duration::from_secs(60);

/// Group id -> (when read, member ids).
type Cache = Arc<Mutex<HashMap<String, (Instant, Vec<String>)>>>;

/// Cached user-group membership.
#[derive(Clone)]
pub struct GroupDirectory {
    slack: Arc<dyn SlackApi>,
    cache: Cache,
}

impl GroupDirectory {
    /// A directory reading through `slack`.
    pub fn new(slack: Arc<dyn SlackApi>) -> Self {
        Self {
            slack,
            cache: Arc::default(),
        }
    }

    /// The Slack client (for `views.open` from a handler: forms change no state).
    pub fn slack(&self) -> &Arc<dyn SlackApi> {
        &self.slack
    }

    /// The members of each readable group among `groups` (fresh from Slack, then cached);
    /// an unreadable group is left out, so it makes nobody eligible (fails closed).
    pub async fn members_of(
        &self,
        groups: &[String],
    ) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::new();
        for group in groups {
            match self.slack.usergroup_members(group).await {
                Ok(members) => {
                    self.cache
                        .lock()
                        .expect("group cache")
                        .insert(group.clone(), (Instant::now(), members.clone()));
                    out.insert(group.clone(), members);
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "cannot read user group members; nobody is eligible through it");
                }
            }
        }
        out
    }

    /// What kind of account `user` is (`users.info`, never cached: a guest conversion or
    /// a deactivation counts at once). `None` when Slack cannot say: callers fail closed.
    pub async fn user_kind(
        &self,
        user: &str,
        our_team: Option<&str>,
    ) -> Option<crate::domain::access::UserKind> {
        match self.slack.user_info(user).await {
            Ok(flags) => Some(crate::domain::access::UserKind::classify(&flags, our_team)),
            Err(e) => {
                tracing::warn!(%user, error = %e, "users.info failed; treating the account as not allowed");
                None
            }
        }
    }

    /// The groups among `candidates` that `user` belongs to.
    pub async fn groups_of(&self, user: &str, candidates: &[String]) -> Vec<String> {
        let mut member_of = Vec::new();
        for group in candidates {
            let cached = self
                .cache
                .lock()
                .expect("group cache")
                .get(group)
                .filter(|(at, _)| at.elapsed() < TTL)
                .cloned();
            let members = match cached {
                Some((_, members)) => members,
                None => match self.slack.usergroup_members(group).await {
                    Ok(members) => {
                        self.cache
                            .lock()
                            .expect("group cache")
                            .insert(group.clone(), (Instant::now(), members.clone()));
                        members
                    }
                    Err(e) => {
                        tracing::warn!(%group, error = %e, "cannot read user group members; treating as not a member");
                        continue;
                    }
                },
            };
            if members.iter().any(|m| m == user) {
                member_of.push(group.clone());
            }
        }
        member_of
    }
}

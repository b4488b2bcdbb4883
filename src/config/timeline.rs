//! `[timeline]`: which reactions add a message of an incident channel to its timeline.

use serde::Deserialize;

use super::{ConfigError, err};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TimelineSection {
    pub(super) note_reactions: Option<Vec<String>>,
}

/// Timeline settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Emoji names (without colons) that, reacted on a message in an incident channel,
    /// add that message to the incident's timeline. Pinning a message always does.
    pub note_reactions: Vec<String>,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        Self {
            note_reactions: vec!["memo".into()],
        }
    }
}

/// The `[timeline]` section over the defaults.
pub(super) fn timeline_config(section: TimelineSection) -> Result<TimelineConfig, ConfigError> {
    let Some(names) = section.note_reactions else {
        return Ok(TimelineConfig::default());
    };
    let mut note_reactions = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let name = name.trim().trim_matches(':').to_string();
        let valid = !name.is_empty()
            && name.len() <= 100
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+'".contains(c));
        if !valid {
            return Err(err(
                format!("timeline.note_reactions[{i}]"),
                format!(
                    "`{name}` is not an emoji name (lowercase letters, digits, _ - + ', e.g. \"memo\")"
                ),
            ));
        }
        note_reactions.push(name);
    }
    Ok(TimelineConfig { note_reactions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_colons_dropped() {
        let ok = timeline_config(TimelineSection {
            note_reactions: Some(vec![":memo:".into(), "pushpin".into()]),
        })
        .unwrap();
        assert_eq!(ok.note_reactions, vec!["memo", "pushpin"]);
        let err = timeline_config(TimelineSection {
            note_reactions: Some(vec!["memo".into(), "Bad Emoji".into()]),
        })
        .unwrap_err();
        assert_eq!(err.key, "timeline.note_reactions[1]");
        assert_eq!(
            timeline_config(TimelineSection::default()).unwrap(),
            TimelineConfig::default()
        );
    }
}

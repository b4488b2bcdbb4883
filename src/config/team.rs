//! `[team]`: the time zone, business hours and holidays that "next business day" and
//! business-hours rules are counted in (`KLAXON_TIMEZONE` overrides the zone).

use chrono::{NaiveDate, NaiveTime};
use chrono_tz::Tz;
use serde::Deserialize;

use super::{ConfigError, Env, err};
use crate::domain::calendar::BusinessCalendar;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TeamSection {
    timezone: Option<String>,
    business_hours_start: Option<String>,
    #[serde(default)]
    holidays: Vec<String>,
}

/// The `[team]` section over [`BusinessCalendar::default`].
pub(super) fn calendar(team: TeamSection, env: Env<'_>) -> Result<BusinessCalendar, ConfigError> {
    let mut calendar = BusinessCalendar::default();
    if let Some(tz) = env("KLAXON_TIMEZONE").or(team.timezone) {
        calendar.tz = tz.parse::<Tz>().map_err(|_| {
            err(
                "team.timezone",
                format!("`{tz}` is not an IANA time zone like Europe/London"),
            )
        })?;
    }
    if let Some(start) = team.business_hours_start {
        calendar.opens_at = NaiveTime::parse_from_str(&start, "%H:%M").map_err(|_| {
            err(
                "team.business_hours_start",
                format!("`{start}` is not a time like 09:00"),
            )
        })?;
    }
    for (i, day) in team.holidays.iter().enumerate() {
        let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
            err(
                format!("team.holidays[{i}]"),
                format!("`{day}` is not a date like 2026-12-25"),
            )
        })?;
        calendar.holidays.push(date);
    }
    Ok(calendar)
}

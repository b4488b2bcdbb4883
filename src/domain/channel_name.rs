//! Incident channel names: `inc-YYYYMMDD-short-title`.
//!
//! Slack channel names are lowercase letters, digits, `-` and `_`, at most 80 characters.
//! When the name is taken Klaxon tries `-2`, `-3`...; [`with_suffix`] keeps the result
//! within the limit by shortening the title part, never the suffix.

use chrono::NaiveDate;

/// Slack's limit on channel name length.
pub const MAX_LEN: usize = 80;

/// The planned channel name for an incident declared on local `date` with `title`.
pub fn planned(date: NaiveDate, title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let base = format!("inc-{}", date.format("%Y%m%d"));
    let name = if slug.is_empty() {
        base
    } else {
        format!("{base}-{slug}")
    };
    truncate(&name, MAX_LEN)
}

/// `name` with the `n`th suffix (`n >= 2`), still at most [`MAX_LEN`] characters.
pub fn with_suffix(name: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    format!("{}{suffix}", truncate(name, MAX_LEN - suffix.len()))
}

/// Cuts an ASCII name to `max` characters without leaving a trailing `-`.
fn truncate(name: &str, max: usize) -> String {
    let cut = &name[..name.len().min(max)];
    cut.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn lowercases_and_dashes_the_title() {
        assert_eq!(
            planned(day(), "Database is DOWN!!"),
            "inc-20261123-database-is-down"
        );
        assert_eq!(
            planned(day(), "API: 5xx / eu-west-1"),
            "inc-20261123-api-5xx-eu-west-1"
        );
        assert_eq!(planned(day(), "Ünïcode — only"), "inc-20261123-n-code-only");
        assert_eq!(planned(day(), "!!!"), "inc-20261123");
    }

    #[test]
    fn stays_within_slacks_limit_even_with_a_suffix() {
        let long = "a very long title ".repeat(10);
        let name = planned(day(), &long);
        assert!(name.len() <= MAX_LEN, "{name}");
        assert!(!name.ends_with('-'));
        let suffixed = with_suffix(&name, 12);
        assert!(suffixed.len() <= MAX_LEN);
        assert!(suffixed.ends_with("-12"));
        assert_eq!(with_suffix("inc-20261123-db", 2), "inc-20261123-db-2");
    }

    #[test]
    fn every_character_is_one_slack_accepts() {
        let name = planned(
            day(),
            "Ça ne marche pas: <script>alert(1)</script> \n\t 東京",
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}

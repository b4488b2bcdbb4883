//! The team's business calendar: time zone, business hours, working days and holidays.
//!
//! Stored times are UTC; this is where a UTC instant meets the team's wall clock (SEV4's
//! "next business day", times shown to people).

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// Business hours in one time zone, Monday to Friday, minus holidays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessCalendar {
    /// The team's time zone.
    pub tz: Tz,
    /// Local time business hours start (e.g. 09:00).
    pub opens_at: NaiveTime,
    /// Local dates that are not business days.
    pub holidays: Vec<NaiveDate>,
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        Self {
            tz: chrono_tz::UTC,
            opens_at: NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
            holidays: Vec::new(),
        }
    }
}

impl BusinessCalendar {
    /// Whether `date` (local) is a working day.
    pub fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&date)
    }

    /// The first opening of business hours strictly after `after`: declared on Friday
    /// evening, that is Monday at `opens_at`; declared on Tuesday at 08:00 with hours opening
    /// at 09:00, Tuesday at 09:00.
    ///
    /// When `opens_at` falls in a DST gap the opening moves to the first instant after it.
    pub fn next_business_day_start(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let mut date = after.with_timezone(&self.tz).date_naive();
        // A year of consecutive holidays is a configuration error, not a reason to loop.
        for _ in 0..366 {
            if self.is_business_day(date) {
                let opening = self.local_to_utc(date.and_time(self.opens_at));
                if opening > after {
                    return opening;
                }
            }
            date = date.succ_opt().expect("date in range");
        }
        after + TimeDelta::days(1)
    }

    fn local_to_utc(&self, local: chrono::NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => earliest.with_timezone(&Utc),
            // In a spring-forward gap: the wall clock skips this time; use the first minute
            // that exists after it.
            LocalResult::None => {
                let mut probe = local;
                loop {
                    probe += TimeDelta::minutes(1);
                    if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                        return t.with_timezone(&Utc);
                    }
                }
            }
        }
    }

    /// Formats `at` on the team's wall clock, e.g. `Mon 23 Nov 09:00 GMT`.
    pub fn format_local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.tz)
            .format("%a %d %b %H:%M %Z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn calendar(tz: Tz) -> BusinessCalendar {
        BusinessCalendar {
            tz,
            ..Default::default()
        }
    }

    #[test]
    fn friday_evening_goes_to_monday_morning() {
        let cal = calendar(chrono_tz::America::New_York);
        // Friday 2026-11-20 19:00 EST = Saturday 00:00 UTC.
        let next = cal.next_business_day_start(utc("2026-11-21T00:00:00Z"));
        // Monday 09:00 EST = 14:00 UTC.
        assert_eq!(next, utc("2026-11-23T14:00:00Z"));
    }

    #[test]
    fn before_opening_on_a_weekday_is_the_same_day() {
        let cal = calendar(chrono_tz::Europe::London);
        assert_eq!(
            cal.next_business_day_start(utc("2026-11-24T07:00:00Z")),
            utc("2026-11-24T09:00:00Z")
        );
        assert_eq!(
            cal.next_business_day_start(utc("2026-11-24T09:00:00Z")),
            utc("2026-11-25T09:00:00Z"),
            "exactly at opening counts as after"
        );
    }

    #[test]
    fn across_a_dst_change() {
        // Europe/London falls back on Sunday 2026-10-25. Friday 23 Oct 18:00 BST (17:00 UTC)
        // -> Monday 26 Oct 09:00 GMT (09:00 UTC), not 08:00 UTC.
        let cal = calendar(chrono_tz::Europe::London);
        assert_eq!(
            cal.next_business_day_start(utc("2026-10-23T17:00:00Z")),
            utc("2026-10-26T09:00:00Z")
        );
        // US springs forward on Sunday 2026-03-08: Friday 6 Mar 18:00 EST (23:00 UTC) ->
        // Monday 9 Mar 09:00 EDT = 13:00 UTC.
        let cal = calendar(chrono_tz::America::New_York);
        assert_eq!(
            cal.next_business_day_start(utc("2026-03-06T23:00:00Z")),
            utc("2026-03-09T13:00:00Z")
        );
    }

    #[test]
    fn skips_holidays() {
        let mut cal = calendar(chrono_tz::UTC);
        cal.holidays
            .push(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        assert_eq!(
            cal.next_business_day_start(utc("2026-11-21T12:00:00Z")),
            utc("2026-11-24T09:00:00Z")
        );
    }

    #[test]
    fn opening_inside_a_dst_gap_moves_to_the_first_real_minute() {
        let cal = BusinessCalendar {
            tz: chrono_tz::America::New_York,
            opens_at: NaiveTime::from_hms_opt(2, 30, 0).unwrap(),
            holidays: vec![],
        };
        // 2026-03-09 is a Monday; the gap is on Sunday 8 March, a weekend, so use a
        // weekday gap instead: none exist in New York. Check the Sunday directly.
        let sunday = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        let t = cal.local_to_utc(sunday.and_time(cal.opens_at));
        assert_eq!(t, utc("2026-03-08T07:00:00Z"), "03:00 EDT");
    }
}

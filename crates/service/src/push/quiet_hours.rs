//! Quiet hours (Ruhezeiten): the `org.matrix.msc4141.time_and_day` push condition and the
//! personal schedule in account data `org.feldpost.quiet_hours`. Both are evaluated in the
//! user's time zone (IANA name, DST handled by the time zone database), at the time an injectable
//! clock gives, so tests can walk across weekends, midnights and DST changes.
//!
//! The schedule:
//!
//! ```json
//! {"enabled": true, "timezone": "Europe/Berlin",
//!  "windows": [{"day_of_week": [1,2,3,4,5], "time_of_day": ["18:00", "07:00"]},
//!              {"day_of_week": [0, 6]}],
//!  "leave": [{"from": "2026-12-21", "to": "2027-01-04"}],
//!  "holiday_region": "DE-BY", "holidays": true}
//! ```
//!
//! Windows use the condition's interval shape (0 = Sunday). A window whose start is after its
//! end runs across midnight: it starts on the listed day and ends on the next.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use ruma::push::{PushCondition, Ruleset};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::OrgHoliday;
use super::holidays;

/// The account data type of the personal schedule.
pub const SCHEDULE_TYPE: &str = "org.feldpost.quiet_hours";

/// The condition kinds recognised as MSC4141 `time_and_day`.
pub const TIME_AND_DAY_KINDS: &[&str] = &["org.matrix.msc4141.time_and_day", "time_and_day"];

/// One interval: the days (0 = Sunday … 6 = Saturday) and optionally a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(default)]
    pub day_of_week: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<[String; 2]>,
}

/// A leave: both dates inclusive, `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    pub from: String,
    pub to: String,
}

/// The personal quiet-hour schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub windows: Vec<Interval>,
    #[serde(default)]
    pub leave: Vec<Leave>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holiday_region: Option<String>,
    #[serde(default = "yes")]
    pub holidays: bool,
}

fn yes() -> bool {
    true
}
fn utc() -> String {
    "UTC".into()
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            enabled: true,
            timezone: utc(),
            windows: vec![],
            leave: vec![],
            holiday_region: None,
            holidays: true,
        }
    }
}

/// Why a moment is quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuietReason {
    Window,
    Leave,
    Holiday(String),
}

/// Parses `hh:mm` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Date> {
    s.trim().parse::<Date>().ok()
}

/// The local date, minute of day and weekday (0 = Sunday) at `now_ms` in `tz`.
fn local(now_ms: i64, tz: &TimeZone) -> Option<(Date, u16, u8)> {
    let zoned = Timestamp::from_millisecond(now_ms)
        .ok()?
        .to_zoned(tz.clone());
    let t: Time = zoned.time();
    let minute = u16::try_from(i32::from(t.hour()) * 60 + i32::from(t.minute())).ok()?;
    let dow = u8::try_from(zoned.weekday().to_sunday_zero_offset()).ok()?;
    Some((zoned.date(), minute, dow))
}

impl Interval {
    /// Whether the local moment falls in this interval. Times are inclusive (to the minute).
    fn contains(&self, minute: u16, dow: u8) -> bool {
        let on = |d: u8| self.day_of_week.contains(&d);
        let Some([start, end]) = &self.time_of_day else {
            return on(dow);
        };
        let (Some(start), Some(end)) = (parse_hhmm(start), parse_hhmm(end)) else {
            return false;
        };
        if start <= end {
            on(dow) && (start..=end).contains(&minute)
        } else {
            // Across midnight: the evening of a listed day, or the morning after one.
            (on(dow) && minute >= start) || (on((dow + 6) % 7) && minute <= end)
        }
    }

    /// Whether the interval is well-formed.
    pub fn valid(&self) -> bool {
        !self.day_of_week.is_empty()
            && self.day_of_week.iter().all(|d| *d <= 6)
            && self
                .time_of_day
                .as_ref()
                .is_none_or(|[a, b]| parse_hhmm(a).is_some() && parse_hhmm(b).is_some())
    }
}

/// Evaluates one `time_and_day` condition (its JSON data) at `now_ms`.
pub fn time_and_day_matches(data: &serde_json::Map<String, Value>, now_ms: i64) -> bool {
    let tz_name = data
        .get("timezone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let Ok(tz) = TimeZone::get(tz_name) else {
        return false;
    };
    let Some(intervals) = data
        .get("intervals")
        .and_then(|v| serde_json::from_value::<Vec<Interval>>(v.clone()).ok())
    else {
        return false;
    };
    let Some((_, minute, dow)) = local(now_ms, &tz) else {
        return false;
    };
    intervals.iter().any(|i| i.contains(minute, dow))
}

fn is_time_condition(c: &PushCondition) -> bool {
    TIME_AND_DAY_KINDS.contains(&c.kind())
}

/// Resolves `time_and_day` conditions at `now_ms`, which ruma's evaluation does not know: a
/// rule whose time conditions all hold loses them (its other conditions still apply), a rule
/// with one that does not hold is disabled. `None` when the ruleset has no such condition.
pub fn resolve_time_conditions(rules: &Ruleset, now_ms: i64) -> Option<Ruleset> {
    let has_any = rules
        .override_
        .iter()
        .chain(rules.underride.iter())
        .any(|r| r.conditions.iter().any(is_time_condition));
    if !has_any {
        return None;
    }
    let mut out = rules.clone();
    out.override_ = rules
        .override_
        .iter()
        .cloned()
        .map(|r| resolve_rule(r, now_ms))
        .collect();
    out.underride = rules
        .underride
        .iter()
        .cloned()
        .map(|r| resolve_rule(r, now_ms))
        .collect();
    Some(out)
}

fn resolve_rule(
    mut r: ruma::push::ConditionalPushRule,
    now_ms: i64,
) -> ruma::push::ConditionalPushRule {
    if r.conditions.iter().any(is_time_condition) {
        let holds = r
            .conditions
            .iter()
            .filter(|c| is_time_condition(c))
            .all(|c| time_and_day_matches(&c.data(), now_ms));
        r.conditions.retain(|c| !is_time_condition(c));
        if !holds {
            r.enabled = false;
        }
    }
    r
}

impl Schedule {
    /// Reads a schedule from account data; a malformed one counts as none.
    pub fn from_content(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    fn tz(&self) -> TimeZone {
        TimeZone::get(&self.timezone).unwrap_or(TimeZone::UTC)
    }

    /// The local date at `now_ms` in the schedule's time zone.
    pub fn local_date(&self, now_ms: i64) -> Option<Date> {
        local(now_ms, &self.tz()).map(|(d, _, _)| d)
    }

    /// Whether `now_ms` is quiet for this schedule, and why.
    pub fn quiet_at(
        &self,
        now_ms: i64,
        default_region: Option<&str>,
        org: &[OrgHoliday],
    ) -> Option<QuietReason> {
        if !self.enabled {
            return None;
        }
        let (date, minute, dow) = local(now_ms, &self.tz())?;
        if self.leave.iter().any(|l| {
            matches!((parse_date(&l.from), parse_date(&l.to)), (Some(a), Some(b)) if a <= date && date <= b)
        }) {
            return Some(QuietReason::Leave);
        }
        if self.holidays {
            let region = self.holiday_region.as_deref().or(default_region);
            if let Some(region) = region
                && let Some(name) = holidays::holiday_on(date, region, org)
            {
                return Some(QuietReason::Holiday(name));
            }
        }
        if self.windows.iter().any(|w| w.contains(minute, dow)) {
            return Some(QuietReason::Window);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Milliseconds of a local wall-clock time in a zone.
    fn at(tz: &str, s: &str) -> i64 {
        let dt: jiff::civil::DateTime = s.parse().unwrap();
        dt.to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    fn evening_schedule() -> Schedule {
        Schedule {
            timezone: "Europe/Berlin".into(),
            windows: vec![
                Interval {
                    day_of_week: vec![1, 2, 3, 4, 5],
                    time_of_day: Some(["20:00".into(), "07:00".into()]),
                },
                Interval {
                    day_of_week: vec![0, 6],
                    time_of_day: None,
                },
            ],
            ..Schedule::default()
        }
    }

    #[test]
    fn window_across_midnight() {
        let s = evening_schedule();
        // Tuesday 2026-11-24.
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2026-11-24T19:59"), None, &[]),
            None
        );
        assert!(
            s.quiet_at(at("Europe/Berlin", "2026-11-24T20:00"), None, &[])
                .is_some()
        );
        assert!(
            s.quiet_at(at("Europe/Berlin", "2026-11-25T06:30"), None, &[])
                .is_some()
        );
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2026-11-25T07:01"), None, &[]),
            None
        );
        // Friday night runs into the weekend; Monday morning belongs to Sunday's all-day window
        // only until midnight, then to nothing (Sunday is not in the evening window).
        assert!(
            s.quiet_at(at("Europe/Berlin", "2026-11-28T12:00"), None, &[])
                .is_some()
        );
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2026-11-30T06:00"), None, &[]),
            None
        );
    }

    #[test]
    fn dst_keeps_local_time() {
        let s = Schedule {
            timezone: "Europe/Berlin".into(),
            windows: vec![Interval {
                day_of_week: vec![0, 1, 2, 3, 4, 5, 6],
                time_of_day: Some(["22:00".into(), "06:00".into()]),
            }],
            ..Schedule::default()
        };
        // 2026-03-29: clocks go from 02:00 to 03:00. 05:30 local is 03:30 UTC after the change.
        assert!(
            s.quiet_at(at("Europe/Berlin", "2026-03-29T05:30"), None, &[])
                .is_some()
        );
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2026-03-29T06:30"), None, &[]),
            None
        );
        // The same UTC instant a week earlier (04:30 UTC) is 05:30 CET: quiet; and 05:30 UTC
        // after the change is 07:30 CEST: not quiet, although 05:30 UTC was quiet in winter.
        let utc_0530_summer = at("UTC", "2026-03-30T05:30");
        assert_eq!(s.quiet_at(utc_0530_summer, None, &[]), None);
        let utc_0430_winter = at("UTC", "2026-03-23T04:30");
        assert!(s.quiet_at(utc_0430_winter, None, &[]).is_some());
    }

    #[test]
    fn leave_and_holidays() {
        let s = Schedule {
            timezone: "Europe/Berlin".into(),
            leave: vec![Leave {
                from: "2026-12-21".into(),
                to: "2027-01-04".into(),
            }],
            holiday_region: Some("DE-BY".into()),
            ..Schedule::default()
        };
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2027-01-04T23:59"), None, &[]),
            Some(QuietReason::Leave)
        );
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2027-01-05T00:00"), None, &[]),
            None
        );
        assert_eq!(
            s.quiet_at(at("Europe/Berlin", "2027-01-06T10:00"), None, &[]),
            Some(QuietReason::Holiday("Heilige Drei Könige".into()))
        );
    }

    #[test]
    fn time_and_day_condition() {
        let data = json!({
            "kind": "org.matrix.msc4141.time_and_day",
            "timezone": "Europe/Berlin",
            "intervals": [{"time_of_day": ["09:00", "11:00"], "day_of_week": [3]}]
        });
        let data = data.as_object().unwrap();
        // Wednesday 2026-11-25.
        assert!(time_and_day_matches(
            data,
            at("Europe/Berlin", "2026-11-25T09:00")
        ));
        assert!(time_and_day_matches(
            data,
            at("Europe/Berlin", "2026-11-25T11:00")
        ));
        assert!(!time_and_day_matches(
            data,
            at("Europe/Berlin", "2026-11-25T11:01")
        ));
        assert!(!time_and_day_matches(
            data,
            at("Europe/Berlin", "2026-11-26T10:00")
        ));
        let bad = json!({"timezone": "Mars/Olympus", "intervals": []});
        assert!(!time_and_day_matches(bad.as_object().unwrap(), 0));
    }
}

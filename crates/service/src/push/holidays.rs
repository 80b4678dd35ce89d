//! Holiday calendars for quiet hours: German public holidays per Land (computed, including the
//! Easter-based ones), plus the organisation's own days from the configuration.
//!
//! Regions are ISO 3166-2 codes: `DE` (nationwide holidays only) or `DE-BW`, `DE-BY`, `DE-BE`,
//! `DE-BB`, `DE-HB`, `DE-HH`, `DE-HE`, `DE-MV`, `DE-NI`, `DE-NW`, `DE-RP`, `DE-SL`, `DE-SN`,
//! `DE-ST`, `DE-SH`, `DE-TH`. Holidays that apply only to some municipalities of a Land (Fronleichnam
//! in parts of Saxony and Thuringia, Augsburger Friedensfest) are not included; Mariä Himmelfahrt
//! is counted for Bavaria, where most municipalities observe it. An organisation adds what it
//! needs with `[[push.quiet_hours.holidays]]`.

use jiff::civil::{Date, Weekday};

use super::config::OrgHoliday;

/// The Länder and their codes, for validation and help texts.
pub const GERMAN_REGIONS: &[&str] = &[
    "DE", "DE-BW", "DE-BY", "DE-BE", "DE-BB", "DE-HB", "DE-HH", "DE-HE", "DE-MV", "DE-NI", "DE-NW",
    "DE-RP", "DE-SL", "DE-SN", "DE-ST", "DE-SH", "DE-TH",
];

/// Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm).
pub fn easter_sunday(year: i16) -> Option<Date> {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    Date::new(year, i8::try_from(month).ok()?, i8::try_from(day).ok()?).ok()
}

fn offset(date: Date, days: i64) -> Option<Date> {
    date.checked_add(jiff::Span::new().days(days)).ok()
}

/// The German public holidays of a year in a region, with their names.
pub fn german_holidays(year: i16, region: &str) -> Vec<(Date, &'static str)> {
    let land = region.strip_prefix("DE-").unwrap_or("");
    let is = |lands: &[&str]| lands.contains(&land);
    let fixed = |m: i8, d: i8| Date::new(year, m, d).ok();
    let mut out: Vec<(Option<Date>, &'static str)> = Vec::new();
    let easter = easter_sunday(year);
    let from_easter = |days: i64| easter.and_then(|e| offset(e, days));

    out.push((fixed(1, 1), "Neujahr"));
    if is(&["BW", "BY", "ST"]) {
        out.push((fixed(1, 6), "Heilige Drei Könige"));
    }
    if is(&["BE"]) || (is(&["MV"]) && year >= 2023) {
        out.push((fixed(3, 8), "Internationaler Frauentag"));
    }
    out.push((from_easter(-2), "Karfreitag"));
    if is(&["BB"]) {
        out.push((easter, "Ostersonntag"));
    }
    out.push((from_easter(1), "Ostermontag"));
    out.push((fixed(5, 1), "Tag der Arbeit"));
    out.push((from_easter(39), "Christi Himmelfahrt"));
    if is(&["BB"]) {
        out.push((from_easter(49), "Pfingstsonntag"));
    }
    out.push((from_easter(50), "Pfingstmontag"));
    if is(&["BW", "BY", "HE", "NW", "RP", "SL"]) {
        out.push((from_easter(60), "Fronleichnam"));
    }
    if is(&["SL", "BY"]) {
        out.push((fixed(8, 15), "Mariä Himmelfahrt"));
    }
    if is(&["TH"]) && year >= 2019 {
        out.push((fixed(9, 20), "Weltkindertag"));
    }
    out.push((fixed(10, 3), "Tag der Deutschen Einheit"));
    if is(&["BB", "MV", "SN", "ST", "TH"]) || (is(&["HB", "HH", "NI", "SH"]) && year >= 2018) {
        out.push((fixed(10, 31), "Reformationstag"));
    }
    if is(&["BW", "BY", "NW", "RP", "SL"]) {
        out.push((fixed(11, 1), "Allerheiligen"));
    }
    if is(&["SN"]) {
        // The Wednesday before 23 November.
        let bb = fixed(11, 22).and_then(|d| {
            let back = (i64::from(d.weekday().to_monday_zero_offset())
                - i64::from(Weekday::Wednesday.to_monday_zero_offset()))
            .rem_euclid(7);
            offset(d, -back)
        });
        out.push((bb, "Buß- und Bettag"));
    }
    out.push((fixed(12, 25), "1. Weihnachtstag"));
    out.push((fixed(12, 26), "2. Weihnachtstag"));
    let mut days: Vec<(Date, &'static str)> = out
        .into_iter()
        .filter_map(|(d, n)| d.map(|d| (d, n)))
        .collect();
    days.sort();
    days
}

/// Whether `region` is one this module knows (case-insensitive).
pub fn known_region(region: &str) -> bool {
    GERMAN_REGIONS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(region))
}

/// The name of the holiday on `date` in `region` (built-in or organisation), if any.
pub fn holiday_on(date: Date, region: &str, org: &[OrgHoliday]) -> Option<String> {
    let region_upper = region.to_ascii_uppercase();
    if (region_upper == "DE" || region_upper.starts_with("DE-"))
        && let Some((_, name)) = german_holidays(date.year(), &region_upper)
            .into_iter()
            .find(|(d, _)| *d == date)
    {
        return Some(name.to_owned());
    }
    org.iter()
        .filter(|h| {
            h.regions.is_empty() || h.regions.iter().any(|r| r.eq_ignore_ascii_case(region))
        })
        .find(|h| org_date_matches(&h.date, date))
        .map(|h| {
            if h.name.is_empty() {
                "Betriebsfeiertag".to_owned()
            } else {
                h.name.clone()
            }
        })
}

/// `YYYY-MM-DD` matches that day; `MM-DD` matches it every year.
fn org_date_matches(spec: &str, date: Date) -> bool {
    let parts: Vec<&str> = spec.trim().split('-').collect();
    let num = |s: &str| s.parse::<i32>().ok();
    match parts.as_slice() {
        [y, m, d] => {
            num(y) == Some(i32::from(date.year()))
                && num(m) == Some(i32::from(date.month()))
                && num(d) == Some(i32::from(date.day()))
        }
        [m, d] => num(m) == Some(i32::from(date.month())) && num(d) == Some(i32::from(date.day())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i16, m: i8, day: i8) -> Date {
        Date::new(y, m, day).unwrap()
    }

    #[test]
    fn easter_dates() {
        assert_eq!(easter_sunday(2024), Some(d(2024, 3, 31)));
        assert_eq!(easter_sunday(2025), Some(d(2025, 4, 20)));
        assert_eq!(easter_sunday(2026), Some(d(2026, 4, 5)));
        assert_eq!(easter_sunday(2027), Some(d(2027, 3, 28)));
        assert_eq!(easter_sunday(2038), Some(d(2038, 4, 25)));
        assert_eq!(easter_sunday(2008), Some(d(2008, 3, 23)));
    }

    #[test]
    fn laender_differ() {
        let by = german_holidays(2026, "DE-BY");
        let be = german_holidays(2026, "DE-BE");
        let has = |l: &[(Date, &str)], date: Date| l.iter().any(|(x, _)| *x == date);
        // Fronleichnam 2026: 4 June (Easter 5 April + 60).
        assert!(has(&by, d(2026, 6, 4)));
        assert!(!has(&be, d(2026, 6, 4)));
        assert!(has(&be, d(2026, 3, 8)));
        assert!(has(&by, d(2026, 1, 6)));
        // Nationwide days everywhere.
        for l in [&by, &be] {
            assert!(has(l, d(2026, 10, 3)));
            assert!(has(l, d(2026, 4, 3))); // Karfreitag
            assert!(has(l, d(2026, 5, 14))); // Christi Himmelfahrt
            assert!(has(l, d(2026, 5, 25))); // Pfingstmontag
        }
        // Buß- und Bettag in Saxony: 18 November 2026, 22 November 2023.
        assert!(has(&german_holidays(2026, "DE-SN"), d(2026, 11, 18)));
        assert!(has(&german_holidays(2023, "DE-SN"), d(2023, 11, 22)));
        assert!(has(&german_holidays(2026, "DE-NI"), d(2026, 10, 31)));
        assert!(!has(&german_holidays(2017, "DE-NI"), d(2017, 10, 31)));
    }

    #[test]
    fn organisation_days() {
        let org = vec![OrgHoliday {
            date: "12-24".into(),
            name: "Heiligabend".into(),
            regions: vec![],
        }];
        assert_eq!(
            holiday_on(d(2026, 12, 24), "DE-HE", &org).as_deref(),
            Some("Heiligabend")
        );
        assert_eq!(
            holiday_on(d(2026, 12, 25), "DE-HE", &org).as_deref(),
            Some("1. Weihnachtstag")
        );
        assert_eq!(holiday_on(d(2026, 12, 23), "DE-HE", &org), None);
    }
}

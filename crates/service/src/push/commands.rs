//! The quiet-hours service account: a local user (`@ruhezeit:<server>` by default) that any
//! Matrix app can chat with to set its personal schedule, in German or English. It joins rooms
//! it is invited to, and answers messages that read as commands with an `m.notice`.
//!
//! The server-notices account cannot serve here: users cannot write in notice rooms. This is a
//! separate, minimal account with no password; it only ever acts through this module.
//!
//! Commands (German / English):
//! - `status`
//! - `ruhezeit an|aus` / `quiet on|off`
//! - `ruhezeit wochenende an|aus` / `quiet weekend on|off`
//! - `ruhezeit werktags 18:00 bis 07:00` / `quiet weekdays 18:00 to 07:00` (`aus`/`off` clears)
//! - `urlaub 2026-12-21 bis 2027-01-04` / `leave 2026-12-21 to 2027-01-04`;
//!   `urlaub löschen` / `leave clear`
//! - `zeitzone Europe/Berlin` / `timezone Europe/Berlin`
//! - `feiertage DE-BY|aus` / `holidays DE-BY|off`
//! - `hilfe` / `help`

use std::sync::Arc;

use feldpost_storage::{NewUser, Store};
use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use super::config::QuietHoursConfig;
use super::evaluate::Evaluator;
use super::holidays;
use super::quiet_hours::{Interval, Leave, QuietReason, SCHEDULE_TYPE, Schedule, parse_date};
use crate::account_data::AccountData;
use crate::pdu::Pdu;
use crate::rooms::append::now_ms;
use crate::rooms::{NewPdu, Rooms};
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    De,
    En,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Help,
    Enabled(bool),
    Weekend(bool),
    Weekdays(Option<(String, String)>),
    Leave(String, String),
    ClearLeave,
    Timezone(String),
    Holidays(Option<String>),
}

fn on_off(word: &str) -> Option<bool> {
    match word {
        "an" | "ein" | "on" => Some(true),
        "aus" | "off" => Some(false),
        _ => None,
    }
}

/// Parses a message; `None` when it is not a command.
pub fn parse(text: &str) -> Option<(Command, Lang)> {
    let lower = text.trim().to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let original: Vec<&str> = text.split_whitespace().collect();
    let (first, rest) = words.split_first()?;
    let lang = match *first {
        "status" => {
            // The word is the same in both languages: answer in German unless asked otherwise.
            return Some((Command::Status, Lang::De));
        }
        "hilfe" | "ruhezeit" | "urlaub" | "zeitzone" | "feiertage" => Lang::De,
        "help" | "quiet" | "leave" | "timezone" | "holidays" => Lang::En,
        _ => return None,
    };
    let cmd = match (*first, rest) {
        ("hilfe" | "help", _) => Command::Help,
        ("ruhezeit" | "quiet", [w]) => Command::Enabled(on_off(w)?),
        ("ruhezeit" | "quiet", ["wochenende" | "weekend", w]) => Command::Weekend(on_off(w)?),
        ("ruhezeit" | "quiet", ["werktags" | "weekdays" | "abends" | "evenings", w])
            if on_off(w) == Some(false) =>
        {
            Command::Weekdays(None)
        }
        (
            "ruhezeit" | "quiet",
            [
                "werktags" | "weekdays" | "abends" | "evenings",
                from,
                "bis" | "to" | "-",
                to,
            ],
        ) => Command::Weekdays(Some(((*from).to_owned(), (*to).to_owned()))),
        ("ruhezeit" | "quiet", ["werktags" | "weekdays" | "abends" | "evenings", range]) => {
            let (a, b) = range.split_once('-')?;
            Command::Weekdays(Some((a.to_owned(), b.to_owned())))
        }
        ("urlaub" | "leave", ["löschen" | "loeschen" | "clear"]) => Command::ClearLeave,
        ("urlaub" | "leave", [from, "bis" | "to" | "-", to]) => {
            Command::Leave((*from).to_owned(), (*to).to_owned())
        }
        ("urlaub" | "leave", [day]) => Command::Leave((*day).to_owned(), (*day).to_owned()),
        ("zeitzone" | "timezone", [_]) => Command::Timezone(original.get(1)?.to_string()),
        ("feiertage" | "holidays", [w]) if on_off(w) == Some(false) => Command::Holidays(None),
        ("feiertage" | "holidays", [region]) => Command::Holidays(Some(region.to_uppercase())),
        _ => Command::Help,
    };
    Some((cmd, lang))
}

fn t(lang: Lang, de: &str, en: &str) -> String {
    match lang {
        Lang::De => de.to_owned(),
        Lang::En => en.to_owned(),
    }
}

const DAYS_DE: [&str; 7] = ["So", "Mo", "Di", "Mi", "Do", "Fr", "Sa"];
const DAYS_EN: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

fn describe(s: &Schedule, lang: Lang, now_reason: Option<&QuietReason>) -> String {
    let days = |i: &Interval| {
        i.day_of_week
            .iter()
            .filter_map(|d| {
                let names = if lang == Lang::De { DAYS_DE } else { DAYS_EN };
                names.get(usize::from(*d)).copied()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut lines = vec![];
    lines.push(match (s.enabled, lang) {
        (true, Lang::De) => "Ruhezeiten: an".to_owned(),
        (false, Lang::De) => "Ruhezeiten: aus".to_owned(),
        (true, Lang::En) => "Quiet hours: on".to_owned(),
        (false, Lang::En) => "Quiet hours: off".to_owned(),
    });
    lines.push(format!(
        "{}: {}",
        t(lang, "Zeitzone", "Time zone"),
        s.timezone
    ));
    for w in &s.windows {
        let when = match &w.time_of_day {
            Some([a, b]) => format!("{a}–{b}"),
            None => t(lang, "ganztägig", "all day"),
        };
        lines.push(format!("- {} {when}", days(w)));
    }
    for l in &s.leave {
        lines.push(format!(
            "- {} {} – {}",
            t(lang, "Urlaub", "Leave"),
            l.from,
            l.to
        ));
    }
    lines.push(format!(
        "{}: {}",
        t(lang, "Feiertage", "Holidays"),
        match (&s.holiday_region, s.holidays) {
            (Some(r), true) => r.clone(),
            (None, true) => t(lang, "Region der Organisation", "organisation's region"),
            (_, false) => t(lang, "aus", "off"),
        }
    ));
    lines.push(match now_reason {
        None => t(
            lang,
            "Jetzt: Benachrichtigungen aktiv",
            "Now: notifications on",
        ),
        Some(QuietReason::Window) => t(lang, "Jetzt: Ruhezeit", "Now: quiet hours"),
        Some(QuietReason::Leave) => t(lang, "Jetzt: Urlaub", "Now: on leave"),
        Some(QuietReason::Holiday(name)) => {
            format!("{}: {name}", t(lang, "Jetzt: Feiertag", "Now: holiday"))
        }
    });
    lines.join("\n")
}

fn help(lang: Lang) -> String {
    match lang {
        Lang::De => "Befehle: status · ruhezeit an|aus · ruhezeit wochenende an|aus · \
                     ruhezeit werktags 18:00 bis 07:00 · urlaub 2026-12-21 bis 2027-01-04 · \
                     urlaub löschen · zeitzone Europe/Berlin · feiertage DE-BY|aus"
            .into(),
        Lang::En => "Commands: status · quiet on|off · quiet weekend on|off · \
                     quiet weekdays 18:00 to 07:00 · leave 2026-12-21 to 2027-01-04 · \
                     leave clear · timezone Europe/Berlin · holidays DE-BY|off"
            .into(),
    }
}

pub struct Bot {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    account_data: Arc<AccountData>,
    evaluator: Arc<Evaluator>,
    user_id: OwnedUserId,
    config: QuietHoursConfig,
}

impl Bot {
    pub fn new(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        account_data: Arc<AccountData>,
        evaluator: Arc<Evaluator>,
        config: QuietHoursConfig,
    ) -> Result<Self> {
        let user_id =
            UserId::parse_with_server_name(config.bot_localpart.as_str(), rooms.server_name())
                .map_err(|_| Error::invalid_param("push.quiet_hours.bot_localpart is not valid"))?;
        Ok(Self {
            store,
            rooms,
            account_data,
            evaluator,
            user_id,
            config,
        })
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Creates the account (without a password: nobody can log in as it) if it is missing.
    pub async fn ensure_account(&self) -> Result<()> {
        if self.store.get_user(self.user_id.as_str()).await?.is_some() {
            return Ok(());
        }
        let created = self
            .store
            .create_user(NewUser {
                user_id: self.user_id.to_string(),
                password_hash: None,
                displayname: Some("Ruhezeit".into()),
                is_admin: false,
                created_ms: now_ms(),
            })
            .await;
        match created {
            Ok(()) | Err(feldpost_storage::StorageError::Conflict(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reacts to a new event: joins on invite, answers commands.
    pub async fn on_event(&self, pdu: &Pdu) {
        if let Err(e) = self.handle(pdu).await {
            tracing::debug!(error = %e, "quiet-hours bot could not handle an event");
        }
    }

    async fn handle(&self, pdu: &Pdu) -> Result<()> {
        if pdu.sender == self.user_id {
            return Ok(());
        }
        let content = pdu.content_value();
        if pdu.kind == TimelineEventType::RoomMember {
            if pdu.state_key.as_deref() == Some(self.user_id.as_str())
                && content.get("membership").and_then(Value::as_str) == Some("invite")
            {
                let profile = crate::rooms::membership::Profile {
                    displayname: Some("Ruhezeit".into()),
                    avatar_url: None,
                };
                self.rooms
                    .join(&pdu.room_id, &self.user_id, &profile, None)
                    .await?;
                self.reply(&pdu.room_id, &help(Lang::De)).await?;
            }
            return Ok(());
        }
        if pdu.kind != TimelineEventType::RoomMessage
            || content.get("msgtype").and_then(Value::as_str) != Some("m.text")
        {
            return Ok(());
        }
        let joined = self
            .store
            .membership(pdu.room_id.as_str(), self.user_id.as_str())
            .await?
            .is_some_and(|m| m.membership == "join");
        if !joined {
            return Ok(());
        }
        let Some(body) = content.get("body").and_then(Value::as_str) else {
            return Ok(());
        };
        let Some((cmd, lang)) = parse(body) else {
            return Ok(());
        };
        let answer = self.apply(&pdu.sender, cmd, lang).await?;
        self.reply(&pdu.room_id, &answer).await
    }

    async fn reply(&self, room: &ruma::RoomId, text: &str) -> Result<()> {
        self.rooms
            .append(
                room,
                &self.user_id,
                NewPdu::message(
                    "m.room.message",
                    json!({"msgtype": "m.notice", "body": text}),
                ),
            )
            .await?;
        Ok(())
    }

    async fn schedule(&self, user: &UserId) -> Result<Schedule> {
        match self.account_data.get(user, None, SCHEDULE_TYPE).await {
            Ok(v) => Ok(Schedule::from_content(&v).unwrap_or_default()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(Schedule {
                holiday_region: self.config.default_region.clone(),
                ..Schedule::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Carries out a command for `user` and returns the answer.
    pub async fn apply(&self, user: &UserId, cmd: Command, lang: Lang) -> Result<String> {
        let mut s = self.schedule(user).await?;
        let answer = match cmd {
            Command::Help => return Ok(help(lang)),
            Command::Status => {
                let now = self.evaluator.clock.as_ref();
                let reason = s.quiet_at(
                    super::Clock::now_ms(now),
                    self.config.default_region.as_deref(),
                    &self.config.holidays,
                );
                return Ok(describe(&s, lang, reason.as_ref()));
            }
            Command::Enabled(on) => {
                s.enabled = on;
                t(lang, "Ruhezeiten gespeichert.", "Quiet hours saved.")
            }
            Command::Weekend(on) => {
                s.windows
                    .retain(|w| !(w.time_of_day.is_none() && w.day_of_week == vec![0, 6]));
                if on {
                    s.windows.push(Interval {
                        day_of_week: vec![0, 6],
                        time_of_day: None,
                    });
                }
                t(
                    lang,
                    if on {
                        "Wochenende ist jetzt Ruhezeit."
                    } else {
                        "Wochenende ist keine Ruhezeit mehr."
                    },
                    if on {
                        "Weekends are now quiet."
                    } else {
                        "Weekends are no longer quiet."
                    },
                )
            }
            Command::Weekdays(range) => {
                s.windows
                    .retain(|w| !(w.time_of_day.is_some() && w.day_of_week == vec![1, 2, 3, 4, 5]));
                if let Some((from, to)) = range {
                    let w = Interval {
                        day_of_week: vec![1, 2, 3, 4, 5],
                        time_of_day: Some([from, to]),
                    };
                    if !w.valid() {
                        return Ok(t(
                            lang,
                            "Zeiten bitte als HH:MM, z. B. 18:00 bis 07:00.",
                            "Please give times as HH:MM, e.g. 18:00 to 07:00.",
                        ));
                    }
                    s.windows.push(w);
                }
                t(
                    lang,
                    "Werktags-Ruhezeit gespeichert.",
                    "Weekday quiet hours saved.",
                )
            }
            Command::Leave(from, to) => {
                match (parse_date(&from), parse_date(&to)) {
                    (Some(a), Some(b)) if a <= b => {}
                    _ => {
                        return Ok(t(
                            lang,
                            "Daten bitte als JJJJ-MM-TT, z. B. urlaub 2026-12-21 bis 2027-01-04.",
                            "Please give dates as YYYY-MM-DD, e.g. leave 2026-12-21 to 2027-01-04.",
                        ));
                    }
                }
                let answer = format!(
                    "{} {from} – {to}.",
                    t(lang, "Urlaub eingetragen:", "Leave saved:")
                );
                s.leave.push(Leave { from, to });
                answer
            }
            Command::ClearLeave => {
                s.leave.clear();
                t(lang, "Urlaube gelöscht.", "Leave cleared.")
            }
            Command::Timezone(tz) => {
                if jiff::tz::TimeZone::get(&tz).is_err() {
                    return Ok(t(
                        lang,
                        "Unbekannte Zeitzone (z. B. Europe/Berlin).",
                        "Unknown time zone (e.g. Europe/Berlin).",
                    ));
                }
                s.timezone = tz;
                t(lang, "Zeitzone gespeichert.", "Time zone saved.")
            }
            Command::Holidays(None) => {
                s.holidays = false;
                t(
                    lang,
                    "Feiertage sind keine Ruhezeit mehr.",
                    "Holidays are no longer quiet.",
                )
            }
            Command::Holidays(Some(region)) => {
                if !holidays::known_region(&region) {
                    return Ok(format!(
                        "{} {}",
                        t(
                            lang,
                            "Unbekannte Region. Bekannt:",
                            "Unknown region. Known:"
                        ),
                        holidays::GERMAN_REGIONS.join(", ")
                    ));
                }
                s.holidays = true;
                s.holiday_region = Some(region);
                t(
                    lang,
                    "Feiertagsregion gespeichert.",
                    "Holiday region saved.",
                )
            }
        };
        let content = serde_json::to_value(&s).map_err(|e| Error::internal(e.to_string()))?;
        let Value::Object(map) = content else {
            return Err(Error::internal("schedule did not serialize to an object"));
        };
        self.account_data
            .set(user, None, SCHEDULE_TYPE, map)
            .await?;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_german_and_english() {
        assert_eq!(
            parse("ruhezeit wochenende an"),
            Some((Command::Weekend(true), Lang::De))
        );
        assert_eq!(
            parse("Quiet weekend off"),
            Some((Command::Weekend(false), Lang::En))
        );
        assert_eq!(
            parse("urlaub 2026-12-21 bis 2027-01-04"),
            Some((
                Command::Leave("2026-12-21".into(), "2027-01-04".into()),
                Lang::De
            ))
        );
        assert_eq!(parse("status"), Some((Command::Status, Lang::De)));
        assert_eq!(
            parse("ruhezeit werktags 18:00-07:00"),
            Some((
                Command::Weekdays(Some(("18:00".into(), "07:00".into()))),
                Lang::De
            ))
        );
        assert_eq!(
            parse("timezone Europe/Berlin"),
            Some((Command::Timezone("Europe/Berlin".into()), Lang::En))
        );
        assert_eq!(parse("hallo zusammen"), None);
    }
}

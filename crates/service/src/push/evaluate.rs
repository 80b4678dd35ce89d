//! Push-rule evaluation for new events, on the send path: before an event is stored, it is
//! evaluated for each local member (and an invitee) with ruma's implementation of the push rules,
//! and a notification row for each `notify` match (which drives the unread counts,
//! /notifications and delivery) is stored in the same write as the event. A member's sync, woken
//! once by the event, so sees the event and its new unread counts together; evaluated after the
//! commit, every message woke each recipient a second time for its counts alone.
//!
//! Quiet hours decide only whether a notification is pushed; it is stored and counted anyway.
//!
//! When most joined members get the same outcome (in a group, nearly always: the default rules
//! notify everyone alike, and only the mentioned, the muted and those in quiet hours differ),
//! that outcome is stored once, as a room notification, and rows are stored only for the members
//! whose outcome differs. A message into a room of 2,000 members is then one row and a few
//! exceptions instead of 2,000 rows at random places in the per-user indexes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use feldpost_storage::{NewNotification, NewRoomNotification, Store};
use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel,
};
use ruma::push::{Action, FlattenedJson, PushConditionRoomCtx};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UInt, UserId};
use serde_json::Value;

use super::config::QuietHoursConfig;
use super::quiet_hours::{self, SCHEDULE_TYPE, Schedule};
use super::rules::{self, DefaultRules, PushRules};
use super::{Clock, ClockCell};
use crate::account_data::AccountData;
use crate::pdu::Pdu;
use crate::rooms::EventNotifications;
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::rooms::state::StateMap;
use crate::{Error, Result};

/// Relation hops followed to find an event's thread (the spec's recommendation).
const MAX_THREAD_HOPS: usize = 3;

/// Joined members that must share an outcome for it to be stored as a room notification.
const ROOM_NOTIFICATION_MIN: usize = 2;

/// What an event does for one recipient that it notifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Outcome {
    highlight: bool,
    push: bool,
    actions: String,
}

/// Whether actions notify: `None` if not, else whether they highlight and their JSON.
type Verdict = Option<(bool, String)>;

fn verdict(actions: &[Action]) -> Verdict {
    actions.iter().any(Action::should_notify).then(|| {
        (
            actions.iter().any(Action::is_highlight),
            serde_json::to_string(actions).unwrap_or_else(|_| "[]".into()),
        )
    })
}

/// The ids among `ids` of this server's users (only they get notifications here).
fn local_users<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    server: &ruma::ServerName,
) -> Vec<&'a UserId> {
    ids.into_iter()
        .filter_map(|u| <&UserId>::try_from(u).ok())
        .filter(|u| u.server_name() == server)
        .collect()
}

/// Users whose quiet-hours schedule (or its absence) is kept in memory at most.
const SCHEDULE_CACHE_LIMIT: usize = 100_000;

/// Quiet-hours schedules by user, with the stream position each was read at.
pub(super) type ScheduleCache = Mutex<HashMap<OwnedUserId, (i64, Option<Arc<Schedule>>)>>;

/// Rooms with at least this many joined members keep their member list in memory.
const CACHED_MEMBERS_MIN: usize = 100;
/// Rooms whose member lists are kept at most; past it the cache starts over.
const MEMBER_CACHE_LIMIT: usize = 1_000;

/// A large room's joined members, with the state map they belong to. Members change only through
/// membership events, and each of those gives the room a new state map: while the map is the same
/// one, so is the list, and a message into a room of 2,000 reads no member list from the
/// database. The weak reference keeps the map's address from being reused, and nothing else.
pub(super) struct CachedMembers {
    state: Weak<StateMap>,
    joined: Arc<Vec<String>>,
}

pub struct Evaluator {
    pub(super) store: Arc<dyn Store>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) rules: Arc<PushRules>,
    pub(super) account_data: Arc<AccountData>,
    pub(super) clock: Arc<ClockCell>,
    pub(super) quiet: QuietHoursConfig,
    /// Large rooms' joined members (see [`CachedMembers`]).
    pub(super) members: Mutex<HashMap<String, CachedMembers>>,
}

/// Turns the recipients' outcomes into what is stored: the joined members' most common outcome,
/// if it notifies and enough share it, becomes a room notification, and rows are kept for the
/// rest (a row with `notify: false` for a joined member not notified at all).
fn store_as(
    outcomes: Vec<(&UserId, bool, Option<Outcome>)>,
    room_id: &str,
    event_id: &str,
    sender: &str,
    thread_id: String,
) -> EventNotifications {
    let mut tally: HashMap<&Outcome, usize> = HashMap::new();
    let mut silent = 0;
    for (_, joined, outcome) in &outcomes {
        match (joined, outcome) {
            (true, Some(o)) => *tally.entry(o).or_default() += 1,
            (true, None) => silent += 1,
            _ => {}
        }
    }
    // Ties go to the outcome that sorts first, so the choice does not depend on hashing.
    let shared: Option<Outcome> = tally
        .into_iter()
        .filter(|(_, n)| *n >= ROOM_NOTIFICATION_MIN && *n > silent)
        .max_by(|a, b| {
            a.1.cmp(&b.1).then_with(|| {
                (b.0.highlight, b.0.push, &b.0.actions).cmp(&(
                    a.0.highlight,
                    a.0.push,
                    &a.0.actions,
                ))
            })
        })
        .map(|(o, _)| o.clone());
    let ts = now_ms();
    let row = |user: &UserId, o: Option<&Outcome>| NewNotification {
        user_id: user.as_str().to_owned(),
        room_id: room_id.to_owned(),
        event_id: event_id.to_owned(),
        // Set when the event is stored.
        event_stream: 0,
        thread_id: thread_id.clone(),
        notify: o.is_some(),
        highlight: o.is_some_and(|o| o.highlight),
        push: o.is_some_and(|o| o.push),
        actions: o.map_or_else(|| "[]".to_owned(), |o| o.actions.clone()),
        profile_tag: None,
        ts,
    };
    let mut out = EventNotifications::default();
    for (user, joined, outcome) in &outcomes {
        if outcome.as_ref().is_some_and(|o| o.push) {
            out.pushed.push(user.as_str().to_owned());
        }
        match (&shared, outcome) {
            (Some(s), Some(o)) if *joined && s == o => {}
            // Without a room notification, or for an invitee, silence needs no row.
            (None, None) => {}
            (_, None) if !*joined => {}
            _ => out.rows.push(row(user, outcome.as_ref())),
        }
    }
    out.room = shared.map(|o| NewRoomNotification {
        room_id: room_id.to_owned(),
        event_id: event_id.to_owned(),
        sender: sender.to_owned(),
        thread_id,
        highlight: o.highlight,
        push: o.push,
        actions: o.actions,
        ts,
    });
    out
}

impl Evaluator {
    /// The thread an event belongs to: `main`, or the root of its thread (following other
    /// relations a few hops, so a reaction to a threaded message counts in that thread).
    async fn thread_of(&self, pdu: &Pdu) -> Result<String> {
        let mut content = pdu.content_value();
        for _ in 0..MAX_THREAD_HOPS {
            let Some(rel) = content.get("m.relates_to") else {
                break;
            };
            let Some(parent) = rel
                .get("event_id")
                .and_then(Value::as_str)
                .and_then(|s| OwnedEventId::try_from(s).ok())
            else {
                break;
            };
            if rel.get("rel_type").and_then(Value::as_str) == Some("m.thread") {
                return Ok(parent.to_string());
            }
            match self.rooms.pdu(&parent).await? {
                Some(p) if p.room_id == pdu.room_id => content = p.content_value(),
                _ => break,
            }
        }
        Ok("main".into())
    }

    async fn power_levels(&self, pdu: &Pdu, state: &StateMap) -> Result<RoomPowerLevels> {
        let version = self.rooms.room_version(&pdu.room_id).await?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("unsupported room version"))?;
        let mut creators: Vec<OwnedUserId> = vec![];
        if let Some(id) = state.get(&("m.room.create".to_owned(), String::new()))
            && let Some(create) = self.rooms.pdu(id).await?
        {
            creators.push(create.sender.clone());
            if let Some(extra) = create
                .content_value()
                .get("additional_creators")
                .and_then(Value::as_array)
            {
                creators.extend(
                    extra
                        .iter()
                        .filter_map(Value::as_str)
                        .filter_map(|u| OwnedUserId::try_from(u).ok()),
                );
            }
        }
        let content = match state.get(&("m.room.power_levels".to_owned(), String::new())) {
            Some(id) => self.rooms.pdu(id).await?.and_then(|p| {
                serde_json::from_value::<RoomPowerLevelsEventContent>(p.content_value()).ok()
            }),
            None => None,
        };
        Ok(RoomPowerLevels::new(
            RoomPowerLevelsSource::from(content),
            &rules.authorization,
            creators,
        ))
    }

    /// Whether an event is urgent enough to be pushed during quiet hours.
    fn urgent(&self, pdu: &Pdu, levels: &RoomPowerLevels) -> bool {
        let q = &self.quiet;
        if q.urgent_rooms.iter().any(|r| r == pdu.room_id.as_str())
            || q.urgent_senders.iter().any(|s| s == pdu.sender.as_str())
        {
            return true;
        }
        let content = pdu.content_value();
        let room_mention = match content.get("m.mentions") {
            Some(m) => m.get("room").and_then(Value::as_bool) == Some(true),
            None => content
                .get("body")
                .and_then(Value::as_str)
                .is_some_and(|b| b.contains("@room")),
        };
        room_mention
            && levels.for_user(&pdu.sender)
                >= UserPowerLevel::Int(ruma::Int::new_saturating(q.urgent_power_level))
    }

    /// Evaluates an event, not yet stored, for everyone it may notify: the notifications to
    /// store with it. `state` is the room's state after the event.
    pub async fn notifications(
        &self,
        pdu: &Pdu,
        state: &Arc<StateMap>,
    ) -> Result<EventNotifications> {
        // A state event's map already holds it while the list is read before it is stored: only
        // a message's state map describes the members read now, and only its list is kept.
        let members = self
            .joined_members(pdu.room_id.as_str(), state, pdu.state_key.is_none())
            .await?;
        // The members once the event is stored: a membership event changes its target's.
        let target = match (&pdu.kind, &pdu.state_key) {
            (TimelineEventType::RoomMember, Some(target)) => Some((
                target.as_str(),
                pdu.content_value()
                    .get("membership")
                    .and_then(Value::as_str)
                    .unwrap_or("leave")
                    .to_owned(),
            )),
            _ => None,
        };
        let mut joined: Vec<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|u| target.as_ref().is_none_or(|(t, _)| t != u))
            .collect();
        let mut invitee = None;
        match &target {
            Some((t, m)) if m == "join" => joined.push(t),
            Some((t, m)) if m == "invite" => invitee = Some(*t),
            _ => {}
        }
        let sender = pdu.sender.as_str();
        let server = self.rooms.server_name();
        // Only this server's users get notifications here. The joined list names each member
        // once, and the invitee is not among them.
        let recipients = local_users(
            joined
                .iter()
                .copied()
                .chain(invitee)
                .filter(|u| *u != sender),
            server,
        );
        if recipients.is_empty() {
            return Ok(EventNotifications::default());
        }
        // After a start nothing is cached yet: the recipients' rules and schedules are read in
        // two hops instead of two per recipient.
        self.rules.prefetch(&recipients).await?;
        self.prefetch_schedules(&recipients).await?;
        let levels = self.power_levels(pdu, state).await?;
        let member_count = UInt::try_from(joined.len() as u64).unwrap_or_default();
        let event_json = serde_json::value::to_raw_value(&pdu.to_client_value())
            .map_err(|e| Error::internal(e.to_string()))?;
        let text = event_json.get().to_ascii_lowercase();
        let raw: Raw<Value> = Raw::from_json(event_json);
        // Flattened once for all recipients.
        let event = FlattenedJson::from_raw(&raw);
        let thread_id = self.thread_of(pdu).await?;
        let now = self.clock.now_ms();
        let urgent = self.urgent(pdu, &levels);
        let mut defaults = DefaultRules::shared().map(DefaultRules::for_event);
        // One context, of which only the user changes per recipient.
        let mut ctx = PushConditionRoomCtx::new(
            pdu.room_id.clone(),
            member_count,
            pdu.sender.clone(),
            String::new(),
        )
        .with_power_levels(levels.clone().into());
        // What the defaults give every recipient the event does not name, worked out once: in
        // a room of 2,000 that is nearly everyone.
        let mut common: Option<Verdict> = None;

        // Each recipient's outcome (`None`: not notified), and whether they are joined (an
        // invitee is not: a room notification reaches joined members only).
        let mut outcomes: Vec<(&UserId, bool, Option<Outcome>)> =
            Vec::with_capacity(recipients.len());
        for uid in recipients {
            let own = self.rules.own_rules(uid).await?;
            let verdict = match (own, defaults.as_mut()) {
                (None, Some(d)) if d.alike_unless_named() && rules::unnamed(&text, uid) => {
                    match &common {
                        Some(v) => v.clone(),
                        None => {
                            ctx.user_id = uid.to_owned();
                            ctx.user_display_name = String::new();
                            let v = verdict(&d.actions(&event, &ctx, false).await);
                            common = Some(v.clone());
                            v
                        }
                    }
                }
                (None, Some(d)) => {
                    ctx.user_id = uid.to_owned();
                    // The display name is a state lookup and a parse, mostly for nothing.
                    ctx.user_display_name = if d.reads_display_name() {
                        self.display_name(state, uid).await?
                    } else {
                        String::new()
                    };
                    verdict(&d.actions(&event, &ctx, true).await)
                }
                (own, _) => {
                    ctx.user_id = uid.to_owned();
                    ctx.user_display_name = self.display_name(state, uid).await?;
                    let rules = match own {
                        Some(rules) => rules,
                        None => self.rules.ruleset(uid).await?,
                    };
                    let resolved = quiet_hours::resolve_time_conditions(&rules, now);
                    verdict(
                        &rules::actions_for(resolved.as_ref().unwrap_or(&rules), &event, &ctx)
                            .await,
                    )
                }
            };
            let joined = invitee != Some(uid.as_str());
            let Some((highlight, actions)) = verdict else {
                outcomes.push((uid, joined, None));
                continue;
            };
            let quiet = if urgent {
                None
            } else {
                self.quiet_reason(uid, now).await?
            };
            outcomes.push((
                uid,
                joined,
                Some(Outcome {
                    highlight,
                    push: quiet.is_none(),
                    actions,
                }),
            ));
        }
        Ok(store_as(
            outcomes,
            pdu.room_id.as_str(),
            pdu.event_id.as_str(),
            pdu.sender.as_str(),
            thread_id,
        ))
    }

    /// The room's joined members, from the cache while the room's state is the one they were
    /// read with; kept there (for a large room) when `keep`.
    async fn joined_members(
        &self,
        room: &str,
        state: &Arc<StateMap>,
        keep: bool,
    ) -> Result<Arc<Vec<String>>> {
        if let Some(c) = self.members.lock().get(room)
            && std::ptr::eq(c.state.as_ptr(), Arc::as_ptr(state))
        {
            return Ok(c.joined.clone());
        }
        let joined: Arc<Vec<String>> = Arc::new(
            self.store
                .room_members(room)
                .await?
                .into_iter()
                .filter(|m| m.membership == "join")
                .map(|m| m.user_id)
                .collect(),
        );
        if keep && joined.len() >= CACHED_MEMBERS_MIN {
            let mut cache = self.members.lock();
            if cache.len() >= MEMBER_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(
                room.to_owned(),
                CachedMembers {
                    state: Arc::downgrade(state),
                    joined: joined.clone(),
                },
            );
        }
        Ok(joined)
    }

    /// Reads what evaluating a message into each of `rooms` needs (the members, their rules and
    /// quiet-hours schedules), so that the first message into a large room after a start does
    /// not wait for it. The state is read before the members: a membership change in between
    /// leaves a list under a map that is no longer the room's, which is never used.
    pub(super) async fn warm(&self, rooms: &[OwnedRoomId]) -> Result<()> {
        let server = self.rooms.server_name();
        for room in rooms {
            let state = self.rooms.current_state(room).await?;
            let joined = self.joined_members(room.as_str(), &state, true).await?;
            let local = local_users(joined.iter().map(String::as_str), server);
            self.rules.prefetch(&local).await?;
            self.prefetch_schedules(&local).await?;
        }
        Ok(())
    }

    /// The member's display name in the room, or their localpart.
    async fn display_name(&self, state: &StateMap, user: &UserId) -> Result<String> {
        let name = match state.get(&("m.room.member".to_owned(), user.as_str().to_owned())) {
            Some(id) => self.rooms.pdu(id).await?.and_then(|p| {
                p.content_value()
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
            None => None,
        };
        Ok(name.unwrap_or_else(|| user.localpart().to_owned()))
    }

    /// The user's quiet-hours schedule, cached until the change index shows a change of the
    /// user's account data (or memberships) after it was read: most recipients have none, and
    /// reading that from the database for every recipient of every event was the bulk of the
    /// evaluation.
    async fn schedule(&self, user: &UserId) -> Result<Option<Arc<Schedule>>> {
        let cache = &self.rules.schedules;
        if let Some((at, schedule)) = cache.lock().get(user)
            && !self.store.changes().user_changed(user.as_str(), *at)
        {
            return Ok(schedule.clone());
        }
        // The position first: a write racing with the read shows up as a change after it.
        let at = self.store.current_position();
        let schedule = match self.account_data.get(user, None, SCHEDULE_TYPE).await {
            Ok(v) => Schedule::from_content(&v).map(Arc::new),
            Err(e) if e.kind == crate::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut cache = cache.lock();
        if cache.len() >= SCHEDULE_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(user.to_owned(), (at, schedule.clone()));
        Ok(schedule)
    }

    /// Reads the schedules of the users whose cached schedule is missing or stale in one hop.
    async fn prefetch_schedules(&self, users: &[&UserId]) -> Result<()> {
        let cache = &self.rules.schedules;
        let changes = self.store.changes();
        let missing: Vec<&UserId> = {
            let cached = cache.lock();
            users
                .iter()
                .copied()
                .filter(|u| {
                    cached
                        .get(*u)
                        .is_none_or(|(at, _)| changes.user_changed(u.as_str(), *at))
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        // The position first: a write racing with the read shows up as a change after it.
        let at = self.store.current_position();
        let found: HashMap<String, Value> = self
            .account_data
            .global_of(&missing, SCHEDULE_TYPE)
            .await?
            .into_iter()
            .collect();
        let mut cached = cache.lock();
        if cached.len() + missing.len() > SCHEDULE_CACHE_LIMIT {
            cached.clear();
        }
        for user in missing {
            let schedule = found
                .get(user.as_str())
                .and_then(Schedule::from_content)
                .map(Arc::new);
            cached.insert(user.to_owned(), (at, schedule));
        }
        Ok(())
    }

    /// Why the user's notifications are held back now, if they are.
    pub async fn quiet_reason(
        &self,
        user: &UserId,
        now: i64,
    ) -> Result<Option<quiet_hours::QuietReason>> {
        Ok(self.schedule(user).await?.and_then(|s| {
            s.quiet_at(
                now,
                self.quiet.default_region.as_deref(),
                &self.quiet.holidays,
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(highlight: bool, push: bool) -> Option<Outcome> {
        Some(Outcome {
            highlight,
            push,
            actions: r#"["notify"]"#.into(),
        })
    }

    fn users(n: usize) -> Vec<OwnedUserId> {
        (0..n)
            .map(|i| OwnedUserId::try_from(format!("@u{i}:x")).expect("id"))
            .collect()
    }

    fn stored(outcomes: Vec<(&UserId, bool, Option<Outcome>)>) -> EventNotifications {
        store_as(outcomes, "!r:x", "$e", "@s:x", "main".into())
    }

    #[test]
    fn the_common_outcome_is_stored_once_and_the_rest_as_rows() {
        let u = users(6);
        let n = stored(vec![
            (&u[0], true, outcome(false, true)),
            (&u[1], true, outcome(false, true)),
            (&u[2], true, outcome(false, true)),
            (&u[3], true, outcome(true, true)),
            (&u[4], true, None),
            // An invitee is never reached by the room notification.
            (&u[5], false, outcome(false, true)),
        ]);
        let room = n.room.expect("room notification");
        assert!(room.push && !room.highlight);
        assert_eq!(room.sender, "@s:x");
        let rows: Vec<(&str, bool, bool)> = n
            .rows
            .iter()
            .map(|r| (r.user_id.as_str(), r.notify, r.highlight))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("@u3:x", true, true),
                ("@u4:x", false, false),
                ("@u5:x", true, false)
            ]
        );
        assert_eq!(n.pushed, vec!["@u0:x", "@u1:x", "@u2:x", "@u3:x", "@u5:x"]);
    }

    #[test]
    fn rows_only_when_no_notifying_outcome_is_common() {
        let u = users(4);
        // One recipient: a row.
        let n = stored(vec![(&u[0], true, outcome(false, true))]);
        assert!(n.room.is_none());
        assert_eq!(n.rows.len(), 1);
        // Mostly silent (a muted room): rows for the notified only, none for the silent.
        let n = stored(vec![
            (&u[0], true, outcome(false, false)),
            (&u[1], true, outcome(false, false)),
            (&u[2], true, None),
            (&u[3], true, None),
        ]);
        assert!(n.room.is_none());
        assert_eq!(n.rows.len(), 2);
        assert!(n.pushed.is_empty(), "quiet hours push nothing");
        // Nobody notified: nothing at all.
        let n = stored(vec![(&u[0], true, None), (&u[1], true, None)]);
        assert!(n.room.is_none() && n.rows.is_empty() && n.pushed.is_empty());
    }
}

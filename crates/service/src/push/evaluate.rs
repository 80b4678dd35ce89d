//! Push-rule evaluation for new events, on the send path: before an event is stored, it is
//! evaluated for each local member (and an invitee) with ruma's implementation of the push rules,
//! and a notification row for each `notify` match (which drives the unread counts,
//! /notifications and delivery) is stored in the same write as the event. A member's sync, woken
//! once by the event, so sees the event and its new unread counts together; evaluated after the
//! commit, every message woke each recipient a second time for its counts alone.
//!
//! Quiet hours decide only whether a notification is pushed; it is stored and counted anyway.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use feldpost_storage::{NewNotification, Store};
use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel,
};
use ruma::push::{Action, FlattenedJson, PushConditionRoomCtx};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedUserId, UInt, UserId};
use serde_json::Value;

use super::config::QuietHoursConfig;
use super::quiet_hours::{self, SCHEDULE_TYPE, Schedule};
use super::rules::{self, DefaultRules, PushRules};
use super::{Clock, ClockCell};
use crate::account_data::AccountData;
use crate::pdu::Pdu;
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::rooms::state::StateMap;
use crate::{Error, Result};

/// Relation hops followed to find an event's thread (the spec's recommendation).
const MAX_THREAD_HOPS: usize = 3;

/// Users whose quiet-hours schedule (or its absence) is kept in memory at most.
const SCHEDULE_CACHE_LIMIT: usize = 100_000;

/// Quiet-hours schedules by user, with the stream position each was read at.
pub(super) type ScheduleCache = Mutex<HashMap<OwnedUserId, (i64, Option<Arc<Schedule>>)>>;

pub struct Evaluator {
    pub(super) store: Arc<dyn Store>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) rules: Arc<PushRules>,
    pub(super) account_data: Arc<AccountData>,
    pub(super) clock: Arc<ClockCell>,
    pub(super) quiet: QuietHoursConfig,
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

    /// Evaluates an event, not yet stored, for everyone it may notify: the notification rows to
    /// store with it. `state` is the room's state after the event.
    pub async fn notifications(&self, pdu: &Pdu, state: &StateMap) -> Result<Vec<NewNotification>> {
        let members = self.store.room_members(pdu.room_id.as_str()).await?;
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
            .filter(|m| m.membership == "join")
            .map(|m| m.user_id.as_str())
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
        let mut seen = HashSet::new();
        // Only this server's users get notifications here.
        let recipients: Vec<&UserId> = joined
            .iter()
            .copied()
            .chain(invitee)
            .filter(|u| *u != sender && seen.insert(*u))
            .filter_map(|u| <&UserId>::try_from(u).ok())
            .filter(|u| u.server_name() == server)
            .collect();
        if recipients.is_empty() {
            return Ok(vec![]);
        }
        // After a start nothing is cached yet: the recipients' rules and schedules are read in
        // two hops instead of two per recipient.
        self.rules.prefetch(&recipients).await?;
        self.prefetch_schedules(&recipients).await?;
        let levels = self.power_levels(pdu, state).await?;
        let member_count = UInt::try_from(joined.len() as u64).unwrap_or_default();
        let event_json = serde_json::value::to_raw_value(&pdu.to_client_value())
            .map_err(|e| Error::internal(e.to_string()))?;
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
        let room_id = pdu.room_id.to_string();
        let event_id = pdu.event_id.to_string();

        // Sized up front: rows are large, and growing the vector for 2,000 recipients copied
        // them over and over into freshly faulted memory.
        let mut rows = Vec::with_capacity(recipients.len());
        for uid in recipients {
            let own = self.rules.own_rules(uid).await?;
            let shared = match own {
                None => defaults.as_mut(),
                Some(_) => None,
            };
            ctx.user_id = uid.to_owned();
            ctx.user_display_name = match &shared {
                // The display name is a state lookup and a parse, for nothing here.
                Some(d) if !d.reads_display_name() => String::new(),
                _ => self.display_name(state, uid).await?,
            };
            let actions = match shared {
                Some(d) => d.actions(&event, &ctx).await,
                None => {
                    let rules = match own {
                        Some(rules) => rules,
                        None => self.rules.ruleset(uid).await?,
                    };
                    let resolved = quiet_hours::resolve_time_conditions(&rules, now);
                    rules::actions_for(resolved.as_ref().unwrap_or(&rules), &event, &ctx).await
                }
            };
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let quiet = if urgent {
                None
            } else {
                self.quiet_reason(uid, now).await?
            };
            rows.push(NewNotification {
                user_id: uid.as_str().to_owned(),
                room_id: room_id.clone(),
                event_id: event_id.clone(),
                // Set when the event is stored.
                event_stream: 0,
                thread_id: thread_id.clone(),
                notify: true,
                highlight,
                push: quiet.is_none(),
                actions: serde_json::to_string(&actions).unwrap_or_else(|_| "[]".into()),
                profile_tag: None,
                ts: now_ms(),
            });
        }
        Ok(rows)
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

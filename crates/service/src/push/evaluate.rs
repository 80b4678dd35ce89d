//! Push-rule evaluation for new events, off the send path: the room hands every persisted event
//! to a queue, and this worker evaluates it for each local member (and an invitee) with ruma's
//! implementation of the push rules, stores a notification row for each `notify` match (which
//! drives the unread counts, /notifications and delivery), and wakes syncs and pushers.
//!
//! Quiet hours decide only whether a notification is pushed; it is stored and counted anyway.

use std::collections::HashSet;
use std::sync::Arc;

use feldpost_storage::{NewNotification, Store};
use ruma::events::TimelineEventType;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel,
};
use ruma::push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedUserId, UInt};
use serde_json::Value;

use super::config::QuietHoursConfig;
use super::delivery::Delivery;
use super::quiet_hours::{self, SCHEDULE_TYPE, Schedule};
use super::rules::PushRules;
use super::{Clock, ClockCell};
use crate::account_data::AccountData;
use crate::notifier::Notifier;
use crate::pdu::Pdu;
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::{Error, Result};

/// Relation hops followed to find an event's thread (the spec's recommendation).
const MAX_THREAD_HOPS: usize = 3;

pub struct Evaluator {
    pub(super) store: Arc<dyn Store>,
    pub(super) rooms: Arc<Rooms>,
    pub(super) rules: Arc<PushRules>,
    pub(super) account_data: Arc<AccountData>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) delivery: Arc<Delivery>,
    pub(super) clock: Arc<ClockCell>,
    pub(super) quiet: QuietHoursConfig,
}

/// The outcome of evaluating one event for one user.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub user_id: OwnedUserId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    pub push: bool,
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

    async fn power_levels(&self, pdu: &Pdu) -> Result<RoomPowerLevels> {
        let state = self.rooms.current_state(&pdu.room_id).await?;
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

    /// Evaluates an event for everyone it may notify and records the notifications.
    pub async fn evaluate(&self, pdu: &Pdu, stream: i64) -> Result<Vec<Evaluation>> {
        let members = self.store.room_members(pdu.room_id.as_str()).await?;
        let joined: Vec<&str> = members
            .iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.user_id.as_str())
            .collect();
        let mut recipients: Vec<String> = joined.iter().map(|s| (*s).to_owned()).collect();
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = &pdu.state_key
            && pdu
                .content_value()
                .get("membership")
                .and_then(Value::as_str)
                == Some("invite")
            && !recipients.contains(target)
        {
            recipients.push(target.clone());
        }
        let sender = pdu.sender.as_str();
        let mut seen = HashSet::new();
        recipients.retain(|u| u != sender && seen.insert(u.clone()));
        // Only this server's users get notifications here.
        recipients.retain(|u| {
            OwnedUserId::try_from(u.as_str())
                .is_ok_and(|id| id.server_name() == self.rooms.server_name())
        });
        if recipients.is_empty() {
            return Ok(vec![]);
        }
        let levels = self.power_levels(pdu).await?;
        let pl_ctx: PushConditionPowerLevelsCtx = levels.clone().into();
        let state = self.rooms.current_state(&pdu.room_id).await?;
        let member_count = UInt::try_from(joined.len() as u64).unwrap_or_default();
        let event_json = serde_json::value::to_raw_value(&pdu.to_client_value())
            .map_err(|e| Error::internal(e.to_string()))?;
        let raw: Raw<Value> = Raw::from_json(event_json);
        let thread_id = self.thread_of(pdu).await?;
        let now = self.clock.now_ms();
        let urgent = self.urgent(pdu, &levels);

        let mut out = Vec::new();
        let mut rows = Vec::new();
        for user in recipients {
            let Ok(uid) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            let rules = self.rules.ruleset(&uid).await?;
            let resolved = quiet_hours::resolve_time_conditions(&rules, now);
            let ruleset = resolved.as_ref().unwrap_or(&rules);
            let display_name = match state.get(&("m.room.member".to_owned(), user.clone())) {
                Some(id) => self.rooms.pdu(id).await?.and_then(|p| {
                    p.content_value()
                        .get("displayname")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
                None => None,
            }
            .unwrap_or_else(|| uid.localpart().to_owned());
            let ctx = PushConditionRoomCtx::new(
                pdu.room_id.clone(),
                member_count,
                uid.clone(),
                display_name,
            )
            .with_power_levels(pl_ctx.clone());
            let actions = ruleset.get_actions(&raw, &ctx).await.to_vec();
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let quiet = if urgent {
                None
            } else {
                self.quiet_reason(&uid, now).await?
            };
            let push = quiet.is_none();
            rows.push(NewNotification {
                user_id: user.clone(),
                room_id: pdu.room_id.to_string(),
                event_id: pdu.event_id.to_string(),
                event_stream: stream,
                thread_id: thread_id.clone(),
                notify: true,
                highlight,
                push,
                actions: serde_json::to_string(&actions).unwrap_or_else(|_| "[]".into()),
                profile_tag: None,
                ts: now_ms(),
            });
            out.push(Evaluation {
                user_id: uid,
                actions,
                highlight,
                push,
            });
        }
        if rows.is_empty() {
            return Ok(out);
        }
        self.store.add_notifications(rows).await?;
        for e in &out {
            self.notifier.wake_user(e.user_id.as_str());
            if e.push {
                self.delivery.kick_user(e.user_id.as_str());
            }
        }
        Ok(out)
    }

    /// Why the user's notifications are held back now, if they are.
    pub async fn quiet_reason(
        &self,
        user: &ruma::UserId,
        now: i64,
    ) -> Result<Option<quiet_hours::QuietReason>> {
        let schedule = match self.account_data.get(user, None, SCHEDULE_TYPE).await {
            Ok(v) => Schedule::from_content(&v),
            Err(e) if e.kind == crate::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(schedule.and_then(|s| {
            s.quiet_at(
                now,
                self.quiet.default_region.as_deref(),
                &self.quiet.holidays,
            )
        }))
    }
}

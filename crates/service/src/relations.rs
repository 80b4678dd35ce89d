//! Event relationships: `/relations` pagination, the `/threads` list, and the bundled
//! aggregations (`unsigned["m.relations"]`) of `m.thread`, `m.replace` and `m.reference`.
//!
//! Pagination tokens are stream positions (`t<pos>`) meaning "between `pos` and `pos + 1`", the
//! same as `/messages` and `/sync` tokens, so that either may bound the other.

use std::sync::Arc;

use feldpost_storage::{RelationQuery, Store, StoredEvent};
use ruma::{EventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::timeline::{Timeline, position_token};
use crate::{Error, Result};

/// How deep `recurse=true` follows relations of relations (the spec asks for at least 3).
pub const RECURSION_DEPTH: u32 = 3;
/// How many related events one storage read fetches while skipping invisible ones.
const BATCH: u32 = 50;
/// Edits and references looked at per aggregation; older ones are not bundled.
const AGGREGATION_SCAN: u32 = 100;

pub struct Relations {
    store: Arc<dyn Store>,
    timeline: Arc<Timeline>,
}

/// Who is reading, and their current membership (for history visibility).
pub struct Viewer<'a> {
    pub user: &'a UserId,
    pub device: &'a str,
    pub membership: Option<String>,
}

/// A `/relations` request.
pub struct RelationsRequest {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: u32,
    pub forward: bool,
    pub recurse: bool,
}

pub struct RelationsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub recursion_depth: Option<u32>,
}

pub struct ThreadsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
}

fn rel_type_of(content: &Value) -> Option<&str> {
    content.get("m.relates_to")?.get("rel_type")?.as_str()
}

impl Relations {
    pub fn new(store: Arc<dyn Store>, timeline: Arc<Timeline>) -> Self {
        Self { store, timeline }
    }

    /// The reader of a room: `M_FORBIDDEN` unless they are or were in it (or it is
    /// world-readable).
    pub async fn viewer<'a>(
        &self,
        room_id: &RoomId,
        user: &'a UserId,
        device: &'a str,
    ) -> Result<Viewer<'a>> {
        let membership = self.timeline.require_reader(room_id, user).await?;
        Ok(Viewer {
            user,
            device,
            membership,
        })
    }

    async fn visible(&self, v: &Viewer<'_>, e: &StoredEvent) -> Result<bool> {
        self.timeline
            .visible(v.user, e, v.membership.as_deref())
            .await
    }

    /// An event of the room that the viewer may see, else `M_NOT_FOUND`.
    async fn visible_event(
        &self,
        v: &Viewer<'_>,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<StoredEvent> {
        match self.store.get_event(event_id.as_str()).await? {
            Some(e) if e.room_id == room_id.as_str() && self.visible(v, &e).await? => Ok(e),
            _ => Err(Error::not_found("Event not found")),
        }
    }

    /// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`.
    pub async fn relations(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        v: &Viewer<'_>,
        req: RelationsRequest,
    ) -> Result<RelationsPage> {
        self.visible_event(v, room_id, event_id).await?;
        let limit = req.limit.max(1) as usize;
        // Storage bounds are exclusive for `from` and inclusive for `to` in the direction of
        // travel; a token `p` splits the stream between `p` and `p + 1`.
        let (mut from, to) = if req.forward {
            (req.from, req.to)
        } else {
            (
                req.from.map(|p| p.saturating_add(1)),
                req.to.map(|p| p.saturating_add(1)),
            )
        };
        let depth = if req.recurse { RECURSION_DEPTH } else { 1 };
        let mut chunk = Vec::new();
        let mut more = false;
        'fetch: loop {
            let q = RelationQuery {
                room_id: room_id.to_string(),
                event_id: event_id.to_string(),
                rel_type: req.rel_type.clone(),
                event_type: req.event_type.clone(),
                from,
                to,
                limit: BATCH,
                forward: req.forward,
            };
            let batch = self.store.relations_recursive(q, depth).await?;
            let full = batch.len() as u32 == BATCH;
            let n = batch.len();
            for (i, e) in batch.into_iter().enumerate() {
                from = Some(e.stream);
                if self.visible(v, &e).await? {
                    chunk.push(e);
                    if chunk.len() >= limit {
                        more = full || i + 1 < n;
                        break 'fetch;
                    }
                }
            }
            if !full {
                break;
            }
        }
        let boundary = |e: &StoredEvent| if req.forward { e.stream } else { e.stream - 1 };
        let next_batch = more
            .then(|| chunk.last().map(|e| position_token(boundary(e))))
            .flatten();
        let mut rendered = self
            .timeline
            .render_many(&chunk, Some((v.user.as_str(), v.device)))
            .await?;
        for value in &mut rendered {
            self.bundle(room_id, v, value, true).await?;
        }
        Ok(RelationsPage {
            chunk: rendered,
            next_batch,
            prev_batch: req.from.map(position_token),
            recursion_depth: req.recurse.then_some(RECURSION_DEPTH),
        })
    }

    /// `GET /rooms/{roomId}/threads`: thread roots, most recently active first.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        participated: bool,
        from: Option<i64>,
        limit: u32,
    ) -> Result<ThreadsPage> {
        let limit = limit.max(1) as usize;
        // Threads are ordered by their latest reply; storage takes an exclusive upper bound.
        let mut before = from.map_or(i64::MAX, |p| p.saturating_add(1));
        let participant = participated.then(|| v.user.as_str());
        let mut chunk = Vec::new();
        let mut cursor = None;
        let mut more = false;
        'fetch: loop {
            let batch = self
                .store
                .threads(room_id.as_str(), before, BATCH, participant)
                .await?;
            let full = batch.len() as u32 == BATCH;
            let n = batch.len();
            for (i, (root, latest)) in batch.into_iter().enumerate() {
                before = latest;
                if !self.visible(v, &root).await? {
                    continue;
                }
                let mut value = self
                    .timeline
                    .render(&root, Some((v.user.as_str(), v.device)))
                    .await?;
                self.bundle(room_id, v, &mut value, true).await?;
                // A thread none of whose replies the viewer may see is not a thread to them.
                if value["unsigned"]["m.relations"]["m.thread"].is_object() {
                    chunk.push(value);
                    cursor = Some(latest - 1);
                    if chunk.len() >= limit {
                        more = full || i + 1 < n;
                        break 'fetch;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(ThreadsPage {
            chunk,
            next_batch: if more {
                cursor.map(position_token)
            } else {
                None
            },
        })
    }

    /// Adds bundled aggregations to rendered events of one room, as the viewer sees them.
    pub async fn bundle_all(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        values: &mut [Value],
    ) -> Result<()> {
        for value in values {
            self.bundle(room_id, v, value, true).await?;
        }
        Ok(())
    }

    /// Adds `unsigned["m.relations"]` to one rendered event. `with_thread` is off for the
    /// `latest_event` of a thread summary, which cannot itself be a thread root.
    pub async fn bundle(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        value: &mut Value,
        with_thread: bool,
    ) -> Result<()> {
        // State events get no aggregations, nor do edits and annotations.
        if value.get("state_key").is_some()
            || matches!(
                rel_type_of(&value["content"]),
                Some("m.replace" | "m.annotation")
            )
        {
            return Ok(());
        }
        let (Some(event_id), Some(sender), Some(kind)) = (
            value["event_id"].as_str().map(str::to_owned),
            value["sender"].as_str().map(str::to_owned),
            value["type"].as_str().map(str::to_owned),
        ) else {
            return Ok(());
        };
        let redacted = value["unsigned"].get("redacted_because").is_some();
        let mut aggregations = Map::new();
        if with_thread
            && rel_type_of(&value["content"]) != Some("m.thread")
            && let Some(t) = self.thread_summary(room_id, v, &event_id, &sender).await?
        {
            aggregations.insert("m.thread".into(), t);
        }
        if !redacted
            && let Some(edit) = self
                .latest_edit(room_id, v, &event_id, &sender, &kind)
                .await?
        {
            aggregations.insert("m.replace".into(), edit);
        }
        let refs = self.references(room_id, v, &event_id).await?;
        if !refs.is_empty() {
            aggregations.insert("m.reference".into(), json!({ "chunk": refs }));
        }
        if aggregations.is_empty() {
            return Ok(());
        }
        if let Some(obj) = value.as_object_mut() {
            let unsigned = obj.entry("unsigned").or_insert_with(|| json!({}));
            if let Some(u) = unsigned.as_object_mut() {
                u.insert("m.relations".into(), Value::Object(aggregations));
            }
        }
        Ok(())
    }

    fn children(
        room_id: &RoomId,
        event_id: &str,
        rel_type: &str,
        from: Option<i64>,
    ) -> RelationQuery {
        RelationQuery {
            room_id: room_id.to_string(),
            event_id: event_id.to_owned(),
            rel_type: Some(rel_type.to_owned()),
            event_type: None,
            from,
            to: None,
            limit: BATCH,
            forward: false,
        }
    }

    /// `{latest_event, count, current_user_participated}` of a thread root, if the viewer may see
    /// any of its replies.
    async fn thread_summary(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        root: &str,
        root_sender: &str,
    ) -> Result<Option<Value>> {
        let (count, replied) = self
            .store
            .thread_summary(room_id.as_str(), root, v.user.as_str())
            .await?;
        if count == 0 {
            return Ok(None);
        }
        let mut from = None;
        let mut scanned = 0;
        let latest = loop {
            let batch = self
                .store
                .relations(Self::children(room_id, root, "m.thread", from))
                .await?;
            let full = batch.len() as u32 == BATCH;
            let mut found = None;
            for e in batch {
                from = Some(e.stream);
                if self.visible(v, &e).await? {
                    found = Some(e);
                    break;
                }
            }
            scanned += BATCH;
            if found.is_some() || !full || scanned >= AGGREGATION_SCAN {
                break found;
            }
        };
        let Some(latest) = latest else {
            return Ok(None);
        };
        let mut latest_value = self
            .timeline
            .render(&latest, Some((v.user.as_str(), v.device)))
            .await?;
        Box::pin(self.bundle(room_id, v, &mut latest_value, false)).await?;
        Ok(Some(json!({
            "latest_event": latest_value,
            "count": count,
            "current_user_participated": replied || root_sender == v.user.as_str(),
        })))
    }

    /// The most recent valid replacement of an event: same sender, same type, not state, with
    /// `m.new_content` (which encrypted edits carry inside their ciphertext).
    async fn latest_edit(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        event_id: &str,
        sender: &str,
        kind: &str,
    ) -> Result<Option<Value>> {
        let mut q = Self::children(room_id, event_id, "m.replace", None);
        q.limit = AGGREGATION_SCAN;
        let mut best: Option<(u64, String, Value)> = None;
        for e in self.store.relations(q).await? {
            if e.sender != sender
                || e.event_type != kind
                || e.state_key.is_some()
                || !self.visible(v, &e).await?
            {
                continue;
            }
            let rendered = self
                .timeline
                .render(&e, Some((v.user.as_str(), v.device)))
                .await?;
            if kind != "m.room.encrypted" && !rendered["content"]["m.new_content"].is_object() {
                continue;
            }
            let ts = rendered["origin_server_ts"].as_u64().unwrap_or(0);
            let newer = best
                .as_ref()
                .is_none_or(|(bts, bid, _)| (ts, &e.event_id) > (*bts, bid));
            if newer {
                best = Some((ts, e.event_id.clone(), rendered));
            }
        }
        Ok(best.map(|(_, _, v)| v))
    }

    /// The events that `m.reference` this one, oldest first, as `{event_id}` objects.
    async fn references(
        &self,
        room_id: &RoomId,
        v: &Viewer<'_>,
        event_id: &str,
    ) -> Result<Vec<Value>> {
        let mut q = Self::children(room_id, event_id, "m.reference", None);
        q.limit = AGGREGATION_SCAN;
        q.forward = true;
        let mut out = Vec::new();
        for e in self.store.relations(q).await? {
            if self.visible(v, &e).await? {
                out.push(json!({ "event_id": e.event_id }));
            }
        }
        Ok(out)
    }
}

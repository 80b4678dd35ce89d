//! Purging a room: an operator removes it from the database (after its members have left), and
//! the server forgets what it had cached about it.

use ruma::RoomId;

use super::Rooms;
use crate::Result;

impl Rooms {
    /// Removes the room and everything stored about it. Holds the room's lock so that no event
    /// is appended halfway through.
    pub async fn purge(&self, room_id: &RoomId) -> Result<()> {
        let lock = self.room_lock(room_id);
        {
            let _guard = lock.lock().await;
            self.store.purge_room(room_id.as_str()).await?;
            self.tips.lock().remove(room_id);
            self.event_cache
                .lock()
                .retain(|_, p| p.room_id.as_str() != room_id.as_str());
            // The room's state group numbers may be handed out again once its rows are gone;
            // nothing cached under them may outlive it. Purges are rare: forget all groups.
            *self.state_cache.lock() = Default::default();
            self.visibility_memo.lock().clear();
        }
        self.locks.lock().remove(room_id);
        tracing::info!(room = %room_id, "purged room");
        Ok(())
    }

    /// `M_FORBIDDEN` when an operator has blocked the room on this server.
    pub async fn check_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if self
            .store
            .room_blocked_by(room_id.as_str())
            .await?
            .is_some()
        {
            return Err(crate::Error::forbidden(
                "This room has been blocked on this server",
            ));
        }
        Ok(())
    }
}

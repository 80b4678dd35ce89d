//! Per-device entries, looked up by borrowed user and device ids: every sync reads two such
//! caches and every authenticated request one, and a map keyed by an owned pair would allocate
//! both ids for each lookup.

/// Entries past which a map starts over.
const MAX_ENTRIES: usize = 500_000;

pub(crate) struct PerDevice<V> {
    users: foldhash::HashMap<String, Vec<(String, V)>>,
    entries: usize,
}

impl<V> Default for PerDevice<V> {
    fn default() -> Self {
        Self {
            users: foldhash::HashMap::default(),
            entries: 0,
        }
    }
}

impl<V> PerDevice<V> {
    pub(crate) fn get(&self, user: &str, device: &str) -> Option<&V> {
        self.users
            .get(user)?
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, v)| v)
    }

    /// Sets the entry; past `MAX_ENTRIES` entries the cache starts over.
    pub(crate) fn insert(&mut self, user: &str, device: &str, value: V) {
        if self.entries >= MAX_ENTRIES {
            self.users.clear();
            self.entries = 0;
        }
        let devices = self.users.entry(user.to_owned()).or_default();
        match devices.iter_mut().find(|(d, _)| d == device) {
            Some(slot) => slot.1 = value,
            None => {
                devices.push((device.to_owned(), value));
                self.entries += 1;
            }
        }
    }
}

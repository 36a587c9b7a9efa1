//! Each client gets its own BackendKeyData; a cancel request with that key is forwarded to
//! whichever server backend the client is using at that moment.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use crate::server::CancelTarget;

type Slot = Arc<Mutex<Option<CancelTarget>>>;

/// Keys are random numbers chosen here (a lookup cannot plant colliding ones), so a fast
/// hash is enough; it is still seeded per process.
type Keys = HashMap<(i32, i32), Slot, foldhash::fast::RandomState>;

/// Client keys → the server backend each client is using.
#[derive(Clone, Default, Debug)]
pub struct CancelRegistry {
    map: Arc<Mutex<Keys>>,
}

/// A client's registration; removed on drop.
#[derive(Debug)]
pub struct CancelHandle {
    registry: CancelRegistry,
    /// The (pid, key) the client was given.
    pub key: (i32, i32),
    slot: Slot,
}

impl CancelRegistry {
    /// Register a new client with fresh random keys.
    pub fn register(&self) -> CancelHandle {
        let slot: Slot = Arc::default();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let key = (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>());
            if key.0 == 0 {
                continue;
            }
            if let Entry::Vacant(free) = map.entry(key) {
                free.insert(slot.clone());
                return CancelHandle {
                    registry: self.clone(),
                    key,
                    slot,
                };
            }
        }
    }

    /// The backend the client with this key is using, if any.
    pub fn lookup(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.get(&(pid, key))?;
        slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl CancelHandle {
    /// The client now uses this backend (or none).
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_client_keys_to_the_current_backend() {
        let reg = CancelRegistry::default();
        let a = reg.register();
        let b = reg.register();
        assert_ne!(a.key, b.key);
        assert_eq!(reg.lookup(a.key.0, a.key.1), None);
        let t = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 42,
            key: 7,
        };
        a.set(Some(t.clone()));
        assert_eq!(reg.lookup(a.key.0, a.key.1), Some(t));
        assert_eq!(reg.lookup(b.key.0, b.key.1), None);
        assert_eq!(reg.lookup(a.key.0, a.key.1 ^ 1), None);
        let k = a.key;
        drop(a);
        assert_eq!(reg.lookup(k.0, k.1), None);
    }
}

//! [`MemoryStore`]: a [`Store`] that keeps everything in memory (lost at restart).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sealbus::topic::matches;

use super::{Retained, SessionRecord, Store};

/// A store in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sessions: Mutex<BTreeMap<String, SessionRecord>>,
    retained: Mutex<HashMap<String, BTreeMap<String, Retained>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn save_session(&self, record: &SessionRecord) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(record.name.clone(), record.clone());
    }

    fn delete_session(&self, name: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(name);
        let mut retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        retained.remove(name);
    }

    fn sessions(&self) -> Vec<SessionRecord> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.values().cloned().collect()
    }

    fn set_retained(&self, session: &str, topic: &str, message: Option<Retained>) {
        let mut retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        let topics = retained.entry(session.to_owned()).or_default();
        match message {
            Some(message) => {
                topics.insert(topic.to_owned(), message);
            }
            None => {
                topics.remove(topic);
            }
        }
    }

    fn retained_matching(&self, session: &str, filter: &str) -> Vec<Retained> {
        let retained = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        retained
            .get(session)
            .map(|topics| {
                topics
                    .values()
                    .filter(|message| matches(filter, &message.topic))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

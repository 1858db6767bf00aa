//! [`MemoryStore`]: a [`Store`] that keeps everything in memory.
//!
//! Nothing survives the process, but a broker rebuilt over the same `MemoryStore` (an embedding
//! application restarting its server in-process) gets every session back, as with SQLite.
//! Writes are durable as soon as they are applied, so `on_commit` runs before `write` returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{
    CopyRef, MessageKey, Retained, SessionData, SessionRecord, Store, StoreError, StoredClient,
    StoredMessage, StreamState, Write,
};

/// What is stored for one session.
#[derive(Debug, Default)]
struct SessionStore {
    stream: Option<StreamState>,
    messages: BTreeMap<MessageKey, Arc<StoredMessage>>,
    retained: BTreeMap<String, Retained>,
    clients: BTreeMap<String, (StoredClient, BTreeMap<MessageKey, CopyRef>)>,
    /// How many copies refer to each message.
    refs: HashMap<MessageKey, u32>,
}

impl SessionStore {
    fn apply(&mut self, write: Write) {
        match write {
            Write::Stream { epoch } => {
                self.stream = Some(StreamState {
                    epoch,
                    last_offset: 0,
                });
                self.messages
                    .retain(|key, _| matches!(key, MessageKey::Direct(_)));
            }
            Write::Message(message) => {
                if let (MessageKey::Stream(offset), Some(stream)) = (message.key, &mut self.stream)
                {
                    stream.last_offset = stream.last_offset.max(offset);
                }
                self.messages.insert(message.key, message);
            }
            Write::TrimHistory { offset } => {
                let refs = &self.refs;
                self.messages.retain(|key, _| match key {
                    MessageKey::Stream(o) => *o >= offset || refs.contains_key(key),
                    MessageKey::Direct(_) => true,
                });
            }
            Write::Retained { topic, message } => match message {
                Some(message) => {
                    self.retained.insert(topic, message);
                }
                None => {
                    self.retained.remove(&topic);
                }
            },
            Write::Client(client) => {
                let id = client.client_id.clone();
                self.clients.entry(id).or_default().0 = client;
            }
            Write::DropClient { client_id } => {
                if let Some((_, copies)) = self.clients.remove(&client_id) {
                    for key in copies.into_keys() {
                        self.unref(key);
                    }
                }
            }
            Write::Copy { client_id, copy } => {
                let copies = &mut self.clients.entry(client_id.clone()).or_default().1;
                if copies.insert(copy.key, copy).is_none() {
                    *self.refs.entry(copy.key).or_default() += 1;
                }
                let client = &mut self.clients.entry(client_id.clone()).or_default().0;
                if client.client_id.is_empty() {
                    client.client_id = client_id;
                }
            }
            Write::DropCopy { client_id, key } => {
                let removed = self
                    .clients
                    .get_mut(&client_id)
                    .and_then(|(_, copies)| copies.remove(&key));
                if removed.is_some() {
                    self.unref(key);
                }
            }
        }
    }

    fn unref(&mut self, key: MessageKey) {
        if let Some(count) = self.refs.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.refs.remove(&key);
                if matches!(key, MessageKey::Direct(_)) {
                    self.messages.remove(&key);
                }
            }
        }
    }
}

/// A store in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, SessionRecord>>,
    data: Mutex<HashMap<String, SessionStore>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn save_session(&self, record: &SessionRecord) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.insert(record.name.clone(), record.clone());
    }

    fn delete_session(&self, name: &str) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    fn sessions(&self) -> Vec<SessionRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.values().cloned().collect()
    }

    fn load(&self, session: &str) -> Result<SessionData, StoreError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stored) = data.get(session) else {
            return Ok(SessionData::default());
        };
        let (history, directs) = stored
            .messages
            .values()
            .cloned()
            .partition(|m| matches!(m.key, MessageKey::Stream(_)));
        Ok(SessionData {
            stream: stored.stream.clone(),
            history,
            directs,
            retained: stored.retained.values().cloned().collect(),
            clients: stored
                .clients
                .values()
                .map(|(client, copies)| (client.clone(), copies.values().copied().collect()))
                .collect(),
        })
    }

    fn write(&self, session: &str, writes: Vec<Write>, on_commit: Option<super::OnCommit>) {
        {
            let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
            let stored = data.entry(session.to_owned()).or_default();
            for write in writes {
                stored.apply(write);
            }
        }
        if let Some(on_commit) = on_commit {
            on_commit(Ok(()));
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealbus::protocol::{Payload, Qos};

    fn message(key: MessageKey) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            key,
            topic: "t".into(),
            data: Payload::Json(serde_json::json!(1)),
            from: "p".into(),
            ts: 1,
            mid: format!("{key:?}"),
            qos: Qos::AtLeastOnce,
            notify_dead: false,
        })
    }

    #[test]
    fn trim_keeps_messages_that_copies_refer_to() {
        let store = MemoryStore::new();
        let mut writes = vec![Write::Stream { epoch: "e".into() }];
        for offset in 1..=5 {
            writes.push(Write::Message(message(MessageKey::Stream(offset))));
        }
        writes.push(Write::Copy {
            client_id: "c".into(),
            copy: CopyRef {
                key: MessageKey::Stream(2),
                attempts: 1,
            },
        });
        writes.push(Write::TrimHistory { offset: 4 });
        store.write("s", writes, None);
        let data = store.load("s").unwrap();
        let offsets: Vec<_> = data.history.iter().map(|m| m.key).collect();
        assert_eq!(
            offsets,
            [2, 4, 5].map(MessageKey::Stream).to_vec(),
            "offset 2 is still referred to"
        );
        assert_eq!(data.stream.unwrap().last_offset, 5);
    }

    #[test]
    fn a_direct_message_goes_with_its_last_copy() {
        let store = MemoryStore::new();
        let key = MessageKey::Direct(1);
        let copy = |client: &str| Write::Copy {
            client_id: client.into(),
            copy: CopyRef { key, attempts: 0 },
        };
        store.write(
            "s",
            vec![Write::Message(message(key)), copy("a"), copy("b")],
            None,
        );
        store.write(
            "s",
            vec![Write::DropCopy {
                client_id: "a".into(),
                key,
            }],
            None,
        );
        assert_eq!(store.load("s").unwrap().directs.len(), 1);
        store.write(
            "s",
            vec![Write::DropClient {
                client_id: "b".into(),
            }],
            None,
        );
        let data = store.load("s").unwrap();
        assert!(data.directs.is_empty());
        assert_eq!(data.clients.len(), 1, "client a stays, without copies");
        assert!(data.clients[0].1.is_empty());
    }
}

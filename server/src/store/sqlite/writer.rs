//! The writer thread: group commit.
//!
//! Callers queue [`Job`]s on a channel and return at once. The thread takes everything queued
//! (up to [`GROUP_CAP`] writes), applies it in one transaction with cached prepared statements,
//! commits, then runs the jobs' callbacks in queue order. A failed group is rolled back, its
//! callbacks get the error, and the thread goes on with the next group.
//!
//! Within a group, a `Copy` later dropped by a `DropCopy` of the same session, client and key is
//! never written when nothing between the two could tell whether the copy exists (see
//! [`plan`]): a QoS 1 copy acknowledged before its group commits costs no row.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use rusqlite::{Connection, params};

use super::{db_error, u64_bits};
use crate::store::{
    Backlog, MessageKey, OnCommit, Retained, SessionRecord, StoreError, StoredClient,
    StoredMessage, Write,
};

/// Most writes applied in one transaction: a larger backlog is committed in several groups, so
/// that the first callbacks do not wait for all of it.
pub(super) const GROUP_CAP: usize = 20_000;

/// One thing for the writer to do.
pub(super) enum Op {
    /// A batch of writes of one session.
    Write {
        /// The session.
        session: String,
        /// The writes, in order.
        writes: Vec<Write>,
    },
    /// Saves a session definition.
    SaveSession(Box<SessionRecord>),
    /// Deletes a session's rows from every table.
    DeleteSession(String),
    /// Nothing: its callback tells that everything queued before it is committed.
    Barrier,
}

/// An [`Op`] and the callback to run once it is committed (or failed).
pub(super) struct Job {
    /// What to do.
    pub(super) op: Op,
    /// Run after the commit of the op's group.
    pub(super) done: Option<OnCommit>,
}

impl Job {
    /// How much of a group's [`GROUP_CAP`] this job takes.
    pub(super) fn weight(&self) -> usize {
        match &self.op {
            Op::Write { writes, .. } => writes.len().max(1),
            _ => 1,
        }
    }
}

/// The position of one write in a group: (job index, write index).
pub(super) type Position = (usize, usize);

/// What the pre-pass over a group decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// `Copy` writes whose row is not written (a later `DropCopy` of the group removes it).
    pub(super) skip_copy: HashSet<Position>,
    /// `DropCopy` writes that end such a pair: they act as if a copy was removed, whether or
    /// not a row was there.
    pub(super) paired_drop: HashSet<Position>,
}

/// Finds the `Copy`/`DropCopy` pairs of a group that cancel out.
///
/// A `Copy` of (session, client, key) is pending until something could observe the copy's row:
/// a `TrimHistory` of the session (it keeps referred-to stream messages), a `DropClient` of the
/// client (it removes the copy), for a direct key any `DropCopy` of that key or any `DropClient`
/// of the session (they forget a direct message when its last copy goes), and `delete_session`.
/// Those make the pending copies real. A `DropCopy` of the same (session, client, key) that
/// finds the copy still pending cancels it: the `Copy` writes no row, and the `DropCopy` acts as
/// though it removed one (it still deletes an older row of the same copy, and forgets a direct
/// message with no copy left). The store's state after the group is the same as without the
/// pre-pass.
pub(super) fn plan(group: &[Job]) -> Plan {
    // session → key → client → positions of its pending `Copy` writes.
    type Pending<'a> = HashMap<&'a str, HashMap<MessageKey, HashMap<&'a str, Vec<Position>>>>;
    let mut pending: Pending<'_> = HashMap::new();
    let mut plan = Plan::default();
    for (j, job) in group.iter().enumerate() {
        let (session, writes) = match &job.op {
            Op::Write { session, writes } => (session.as_str(), writes),
            Op::DeleteSession(name) => {
                pending.remove(name.as_str());
                continue;
            }
            Op::SaveSession(_) | Op::Barrier => continue,
        };
        for (w, write) in writes.iter().enumerate() {
            match write {
                Write::Copy { client_id, copy } => pending
                    .entry(session)
                    .or_default()
                    .entry(copy.key)
                    .or_default()
                    .entry(client_id.as_str())
                    .or_default()
                    .push((j, w)),
                Write::DropCopy { client_id, key } => {
                    let Some(by_key) = pending.get_mut(session) else {
                        continue;
                    };
                    let Some(by_client) = by_key.get_mut(key) else {
                        continue;
                    };
                    if let Some(copies) = by_client.remove(client_id.as_str()) {
                        plan.skip_copy.extend(copies);
                        plan.paired_drop.insert((j, w));
                    }
                    if matches!(key, MessageKey::Direct(_)) {
                        // Whether the direct message goes depends on the other copies.
                        by_client.clear();
                    }
                    if by_client.is_empty() {
                        by_key.remove(key);
                    }
                }
                Write::TrimHistory { .. } => {
                    if let Some(by_key) = pending.get_mut(session) {
                        by_key.retain(|key, _| matches!(key, MessageKey::Direct(_)));
                    }
                }
                Write::DropClient { client_id } => {
                    if let Some(by_key) = pending.get_mut(session) {
                        by_key.retain(|key, by_client| match key {
                            MessageKey::Direct(_) => false,
                            MessageKey::Stream(_) => {
                                by_client.remove(client_id.as_str());
                                !by_client.is_empty()
                            }
                        });
                    }
                }
                Write::Stream { .. }
                | Write::Message(_)
                | Write::Retained { .. }
                | Write::Client(_) => {}
            }
        }
    }
    plan
}

/// The highest stream offset each session wrote in a group, saved in `streams.last_offset`
/// once per session and group instead of once per message (that `UPDATE` was as costly as the
/// message's `INSERT`). Groups touch few sessions: a list.
#[derive(Debug, Default)]
struct LastOffsets<'a>(Vec<(&'a str, i64)>);

impl<'a> LastOffsets<'a> {
    /// Notes a message of `session` with `key` (stream messages only).
    fn note(&mut self, session: &'a str, key: MessageKey) {
        let MessageKey::Stream(_) = key else { return };
        let offset = key.to_i64();
        match self.0.iter_mut().find(|(s, _)| *s == session) {
            Some((_, last)) => *last = (*last).max(offset),
            None => self.0.push((session, offset)),
        }
    }

    /// Takes the offset noted for `session`.
    fn take(&mut self, session: &str) -> Option<i64> {
        let index = self.0.iter().position(|(s, _)| *s == session)?;
        Some(self.0.swap_remove(index).1)
    }

    /// Drops what was noted for `session` (it is being deleted).
    fn forget(&mut self, session: &str) {
        self.take(session);
    }
}

/// The writer: owns the connection that writes.
pub(super) struct Writer {
    conn: Connection,
    /// Shared with the store: what is queued and not committed.
    backlog: Arc<Backlog>,
}

impl Writer {
    /// A writer on a prepared connection (see `schema::prepare_writer`).
    pub(super) fn new(conn: Connection, backlog: Arc<Backlog>) -> Self {
        Writer { conn, backlog }
    }

    /// Commits groups until every sender is gone and the queue is empty.
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut weight = first.weight();
            let mut group = vec![first];
            while weight < GROUP_CAP {
                let Ok(job) = jobs.try_recv() else { break };
                weight += job.weight();
                group.push(job);
            }
            let result = self.commit(&group);
            if let Err(err) = &result {
                tracing::error!(
                    error = %err,
                    batches = group.len(),
                    writes = weight,
                    "store: a group of writes could not be committed and was rolled back"
                );
            }
            // Out of the backlog before the callbacks run: a callback (a `flush` waiting, a
            // confirmation) may look at the backlog and must not find its own group there.
            self.backlog.remove(weight);
            finish(group, &result);
        }
    }

    /// Applies `group` in one transaction and commits it; rolls back on any error.
    pub(super) fn commit(&mut self, group: &[Job]) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_error)?;
        let plan = plan(group);
        let result = self.apply_group(group, &plan).and_then(|()| {
            self.conn
                .execute_batch("COMMIT")
                .map_err(|err| StoreError::Database(format!("commit: {err}")))
        });
        if result.is_err()
            && !self.conn.is_autocommit()
            && let Err(err) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %err, "store: rollback failed");
        }
        result
    }

    fn apply_group(&self, group: &[Job], plan: &Plan) -> Result<(), StoreError> {
        let mut last_offsets = LastOffsets::default();
        for (j, job) in group.iter().enumerate() {
            match &job.op {
                Op::Write { session, writes } => {
                    for (w, write) in writes.iter().enumerate() {
                        match write {
                            // A reset sets the offset to 0: what came before it goes first.
                            Write::Stream { .. } => {
                                self.save_last_offset(&mut last_offsets, session)?
                            }
                            Write::Message(message) => last_offsets.note(session, message.key),
                            _ => {}
                        }
                        self.apply(session, write, (j, w), plan)?;
                    }
                }
                Op::SaveSession(record) => self.save_session(record)?,
                Op::DeleteSession(name) => {
                    last_offsets.forget(name);
                    self.delete_session(name)?;
                }
                Op::Barrier => {}
            }
        }
        for (session, offset) in last_offsets.0 {
            self.update_last_offset(session, offset)?;
        }
        Ok(())
    }

    /// Writes the offset noted for `session`, if any.
    fn save_last_offset(
        &self,
        last: &mut LastOffsets<'_>,
        session: &str,
    ) -> Result<(), StoreError> {
        match last.take(session) {
            Some(offset) => self.update_last_offset(session, offset),
            None => Ok(()),
        }
    }

    fn update_last_offset(&self, session: &str, offset: i64) -> Result<(), StoreError> {
        self.exec(
            "UPDATE streams SET last_offset = max(last_offset, ?2) WHERE session = ?1",
            params![session, offset],
        )?;
        Ok(())
    }

    fn save_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|err| StoreError::Database(format!("encoding a session record: {err}")))?;
        self.exec(
            "INSERT OR REPLACE INTO sessions (name, record) VALUES (?1, ?2)",
            params![record.name, json],
        )?;
        Ok(())
    }

    fn delete_session(&self, name: &str) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM sessions WHERE name = ?1",
            "DELETE FROM streams WHERE session = ?1",
            "DELETE FROM messages WHERE session = ?1",
            "DELETE FROM retained WHERE session = ?1",
            "DELETE FROM clients WHERE session = ?1",
            "DELETE FROM copies WHERE session = ?1",
        ] {
            self.exec(sql, params![name])?;
        }
        Ok(())
    }

    /// Applies one write, with the semantics of `MemoryStore`.
    fn apply(
        &self,
        session: &str,
        write: &Write,
        position: Position,
        plan: &Plan,
    ) -> Result<(), StoreError> {
        match write {
            Write::Stream { epoch } => {
                self.exec(
                    "INSERT INTO streams (session, epoch, last_offset) VALUES (?1, ?2, 0) \
                     ON CONFLICT (session) DO UPDATE SET epoch = excluded.epoch, last_offset = 0",
                    params![session, epoch],
                )?;
                self.exec(
                    "DELETE FROM messages WHERE session = ?1 AND key > 0",
                    params![session],
                )?;
            }
            Write::Message(message) => self.message(session, message)?,
            Write::TrimHistory { offset } => {
                self.exec(
                    "DELETE FROM messages WHERE session = ?1 AND key > 0 AND key < ?2 \
                     AND NOT EXISTS (SELECT 1 FROM copies \
                                     WHERE copies.session = ?1 AND copies.key = messages.key)",
                    params![session, offset_to_sql(*offset)],
                )?;
            }
            Write::Retained { topic, message } => match message {
                Some(message) => self.retained(session, topic, message)?,
                None => {
                    self.exec(
                        "DELETE FROM retained WHERE session = ?1 AND topic = ?2",
                        params![session, topic],
                    )?;
                }
            },
            Write::Client(client) => self.client(session, client)?,
            Write::DropClient { client_id } => {
                let directs: Vec<i64> = {
                    let mut statement = self
                        .conn
                        .prepare_cached(
                            "SELECT key FROM copies \
                             WHERE session = ?1 AND client_id = ?2 AND key < 0",
                        )
                        .map_err(db_error)?;
                    let rows = statement
                        .query_map(params![session, client_id], |row| row.get(0))
                        .map_err(db_error)?;
                    rows.collect::<Result<_, _>>().map_err(db_error)?
                };
                self.exec(
                    "DELETE FROM copies WHERE session = ?1 AND client_id = ?2",
                    params![session, client_id],
                )?;
                self.exec(
                    "DELETE FROM clients WHERE session = ?1 AND client_id = ?2",
                    params![session, client_id],
                )?;
                for key in directs {
                    self.forget_direct_if_unreferred(session, key)?;
                }
            }
            Write::Copy { client_id, copy } => {
                // A copy's client exists (as in MemoryStore, a copy creates a bare client).
                self.exec(
                    "INSERT OR IGNORE INTO clients (session, client_id, filters, expires_at) \
                     VALUES (?1, ?2, '[]', NULL)",
                    params![session, client_id],
                )?;
                if !plan.skip_copy.contains(&position) {
                    self.exec(
                        "INSERT INTO copies (session, client_id, key, attempts) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (session, client_id, key) \
                         DO UPDATE SET attempts = excluded.attempts",
                        params![session, client_id, copy.key.to_i64(), copy.attempts],
                    )?;
                }
            }
            Write::DropCopy { client_id, key } => {
                let key = key.to_i64();
                let removed = self.exec(
                    "DELETE FROM copies WHERE session = ?1 AND client_id = ?2 AND key = ?3",
                    params![session, client_id, key],
                )?;
                if key < 0 && (removed > 0 || plan.paired_drop.contains(&position)) {
                    self.forget_direct_if_unreferred(session, key)?;
                }
            }
        }
        Ok(())
    }

    fn message(&self, session: &str, message: &StoredMessage) -> Result<(), StoreError> {
        let data = serde_json::to_string(&message.data)
            .map_err(|err| StoreError::Database(format!("encoding a payload: {err}")))?;
        let key = message.key.to_i64();
        self.exec(
            "INSERT OR REPLACE INTO messages \
             (session, key, topic, data, \"from\", ts, mid, qos, notify_dead) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                session,
                key,
                message.topic,
                data,
                message.from,
                u64_bits(message.ts),
                message.mid,
                message.qos.as_u8(),
                message.notify_dead,
            ],
        )?;
        Ok(())
    }

    fn retained(&self, session: &str, topic: &str, message: &Retained) -> Result<(), StoreError> {
        let data = serde_json::to_string(&message.data)
            .map_err(|err| StoreError::Database(format!("encoding a payload: {err}")))?;
        self.exec(
            "INSERT OR REPLACE INTO retained \
             (session, topic, data, \"from\", ts, \"offset\", mid, message_topic) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                session,
                topic,
                data,
                message.from,
                u64_bits(message.ts),
                u64_bits(message.offset),
                message.mid,
                (message.topic != topic).then_some(&message.topic),
            ],
        )?;
        Ok(())
    }

    fn client(&self, session: &str, client: &StoredClient) -> Result<(), StoreError> {
        let filters = serde_json::to_string(&client.filters)
            .map_err(|err| StoreError::Database(format!("encoding filters: {err}")))?;
        self.exec(
            "INSERT INTO clients (session, client_id, filters, expires_at) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (session, client_id) \
             DO UPDATE SET filters = excluded.filters, expires_at = excluded.expires_at",
            params![
                session,
                client.client_id,
                filters,
                client.expires_at.map(u64_bits),
            ],
        )?;
        Ok(())
    }

    /// Forgets the direct message `key` if no copy refers to it any more.
    fn forget_direct_if_unreferred(&self, session: &str, key: i64) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM messages WHERE session = ?1 AND key = ?2 \
             AND NOT EXISTS (SELECT 1 FROM copies WHERE session = ?1 AND key = ?2)",
            params![session, key],
        )?;
        Ok(())
    }

    /// Runs a cached statement; returns the number of rows changed.
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute(params))
            .map_err(db_error)
    }
}

/// A stream offset as SQL compares it (offsets beyond `i64::MAX` do not occur).
fn offset_to_sql(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// Runs the callbacks of a committed (or failed) group, in queue order. A panicking callback is
/// logged and does not stop the writer.
pub(super) fn finish(group: Vec<Job>, result: &Result<(), StoreError>) {
    for job in group {
        if let Some(done) = job.done {
            let outcome = result.as_ref().map(|_| ());
            if std::panic::catch_unwind(AssertUnwindSafe(|| done(outcome))).is_err() {
                tracing::error!("store: an on_commit callback panicked");
            }
        }
    }
}

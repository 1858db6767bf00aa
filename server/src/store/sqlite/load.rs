//! Reading a session back: [`session`] builds the [`SessionData`] that `MemoryStore` would
//! return for the same writes, [`sessions`] lists the stored session definitions.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, Row, TransactionBehavior, params};
use sealbus::protocol::{Payload, Qos};

use super::{db_error, u64_from_bits};
use crate::store::{
    CopyRef, MessageKey, Retained, SessionData, SessionRecord, StoreError, StoredClient,
    StoredMessage, StreamState,
};

const MESSAGE_COLUMNS: &str = "key, topic, data, \"from\", ts, mid, qos, notify_dead";

/// Everything stored for `session`, read in one transaction (one consistent snapshot).
pub(super) fn session(conn: &mut Connection, session: &str) -> Result<SessionData, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(db_error)?;
    let stream = {
        let mut statement = tx
            .prepare_cached("SELECT epoch, last_offset FROM streams WHERE session = ?1")
            .map_err(db_error)?;
        let mut rows = statement.query(params![session]).map_err(db_error)?;
        match rows.next().map_err(db_error)? {
            Some(row) => Some(StreamState {
                epoch: row.get(0).map_err(db_error)?,
                last_offset: non_negative(row.get(1).map_err(db_error)?, "last_offset")?,
            }),
            None => None,
        }
    };
    let history = messages(
        &tx,
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session = ?1 AND key > 0 ORDER BY key"
        ),
        session,
    )?;
    // Direct keys are minus the sequence number: descending key is ascending sequence.
    let directs = messages(
        &tx,
        &format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session = ?1 AND key < 0 \
             ORDER BY key DESC"
        ),
        session,
    )?;
    let retained = {
        let mut statement = tx
            .prepare_cached(
                "SELECT coalesce(message_topic, topic), data, \"from\", ts, \"offset\", mid \
                 FROM retained \
                 WHERE session = ?1 ORDER BY topic",
            )
            .map_err(db_error)?;
        let mut rows = statement.query(params![session]).map_err(db_error)?;
        let mut retained = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            retained.push(Retained {
                topic: row.get(0).map_err(db_error)?,
                data: payload(row, 1)?,
                from: row.get(2).map_err(db_error)?,
                ts: u64_from_bits(row.get(3).map_err(db_error)?),
                offset: u64_from_bits(row.get(4).map_err(db_error)?),
                mid: row.get(5).map_err(db_error)?,
            });
        }
        retained
    };
    let clients = clients(&tx, session)?;
    // A read-only transaction: ending it without a commit changes nothing.
    drop(tx);
    Ok(SessionData {
        stream,
        history,
        directs,
        retained,
        clients,
    })
}

/// Every stored session definition, by name.
pub(super) fn sessions(conn: &Connection) -> Result<Vec<SessionRecord>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT name, record FROM sessions ORDER BY name")
        .map_err(db_error)?;
    let mut rows = statement.query([]).map_err(db_error)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        let name: String = row.get(0).map_err(db_error)?;
        let json: String = row.get(1).map_err(db_error)?;
        let record = serde_json::from_str(&json).map_err(|err| {
            StoreError::Database(format!("the stored session `{name}` is unreadable: {err}"))
        })?;
        records.push(record);
    }
    Ok(records)
}

fn messages(
    conn: &Connection,
    sql: &str,
    session: &str,
) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(db_error)?;
    let mut rows = statement.query(params![session]).map_err(db_error)?;
    let mut messages = Vec::new();
    while let Some(row) = rows.next().map_err(db_error)? {
        let key: i64 = row.get(0).map_err(db_error)?;
        messages.push(Arc::new(StoredMessage {
            key: MessageKey::from_i64(key)
                .ok_or_else(|| StoreError::Database("a stored message has key 0".into()))?,
            topic: row.get(1).map_err(db_error)?,
            data: payload(row, 2)?,
            from: row.get(3).map_err(db_error)?,
            ts: u64_from_bits(row.get(4).map_err(db_error)?),
            mid: row.get(5).map_err(db_error)?,
            qos: match row.get::<_, i64>(6).map_err(db_error)? {
                0 => Qos::AtMostOnce,
                1 => Qos::AtLeastOnce,
                other => {
                    return Err(StoreError::Database(format!(
                        "a stored message has qos {other}"
                    )));
                }
            },
            notify_dead: row.get(7).map_err(db_error)?,
        }));
    }
    Ok(messages)
}

/// Persistent clients by id, each with its copies in key order (stream before direct).
fn clients(
    conn: &Connection,
    session: &str,
) -> Result<Vec<(StoredClient, Vec<CopyRef>)>, StoreError> {
    let mut clients = Vec::new();
    let mut index = HashMap::new();
    {
        let mut statement = conn
            .prepare_cached(
                "SELECT client_id, filters, expires_at FROM clients \
                 WHERE session = ?1 ORDER BY client_id",
            )
            .map_err(db_error)?;
        let mut rows = statement.query(params![session]).map_err(db_error)?;
        while let Some(row) = rows.next().map_err(db_error)? {
            let client_id: String = row.get(0).map_err(db_error)?;
            let filters: String = row.get(1).map_err(db_error)?;
            let filters = serde_json::from_str(&filters).map_err(|err| {
                StoreError::Database(format!(
                    "the stored filters of client `{client_id}` are unreadable: {err}"
                ))
            })?;
            let expires_at: Option<i64> = row.get(2).map_err(db_error)?;
            index.insert(client_id.clone(), clients.len());
            clients.push((
                StoredClient {
                    client_id,
                    filters,
                    expires_at: expires_at.map(u64_from_bits),
                },
                Vec::new(),
            ));
        }
    }
    let mut statement = conn
        .prepare_cached("SELECT client_id, key, attempts FROM copies WHERE session = ?1")
        .map_err(db_error)?;
    let mut rows = statement.query(params![session]).map_err(db_error)?;
    while let Some(row) = rows.next().map_err(db_error)? {
        let client_id: String = row.get(0).map_err(db_error)?;
        let key: i64 = row.get(1).map_err(db_error)?;
        let attempts: i64 = row.get(2).map_err(db_error)?;
        let copy = CopyRef {
            key: MessageKey::from_i64(key)
                .ok_or_else(|| StoreError::Database("a stored copy has key 0".into()))?,
            attempts: u32::try_from(attempts).map_err(|_| {
                StoreError::Database(format!("a stored copy has {attempts} attempts"))
            })?,
        };
        // Every copy's client is stored (a copy creates its client); skip one that is not.
        if let Some(&at) = index.get(&client_id) {
            clients[at].1.push(copy);
        }
    }
    for (_, copies) in &mut clients {
        copies.sort_unstable_by_key(|copy| copy.key);
    }
    Ok(clients)
}

fn payload(row: &Row<'_>, column: usize) -> Result<Payload, StoreError> {
    let json: String = row.get(column).map_err(db_error)?;
    serde_json::from_str(&json)
        .map_err(|err| StoreError::Database(format!("a stored payload is unreadable: {err}")))
}

fn non_negative(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Database(format!("a stored {what} is {value}")))
}

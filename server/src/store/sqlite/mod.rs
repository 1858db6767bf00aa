//! [`SqliteStore`]: a [`Store`] in one embedded SQLite file, the default of `sealbus serve`.
//!
//! * One file (plus SQLite's `-wal` and `-shm` beside it while open) holds every session:
//!   definitions, streams, history, retained messages, persistent clients and their copies.
//!   The layout is in `schema`; a newer Sealbus migrates an older file on open.
//! * Writes never wait for the disk: [`Store::write`] queues the batch for a dedicated writer
//!   thread, which commits everything queued in one transaction (group commit) and then runs
//!   the batches' callbacks in order (`writer`).
//! * Reads (`load`, `sessions`) use a second connection; WAL lets them run beside the writer.
//!   They first wait for the writes queued before them, so they see every one of them.
//!
//! Durability is the [`SyncMode`]'s. The semantics of every write are those of
//! [`MemoryStore`](super::MemoryStore); the conformance tests run the same scenarios on both.
//!
//! One process at a time may serve from a file: two servers writing the same store would each
//! keep their own view in memory and overwrite each other's rows.

mod load;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::{Backlog, OnCommit, SessionData, SessionRecord, Store, StoreError, Write};
use writer::{Job, Op, Writer};

/// When a commit reaches the disk.
///
/// Both modes write through SQLite's write-ahead log (WAL), so a commit is one sequential
/// append; they differ in when SQLite calls `fsync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `synchronous=FULL`: every group commit is `fsync`ed before its callbacks run. A
    /// confirmed write survives a process crash, `kill -9`, an OS crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits reach the OS at once but are `fsync`ed only at WAL
    /// checkpoints. A confirmed write survives a process crash or `kill -9`; an OS crash or a
    /// power loss may lose the last commits (the file stays consistent). Faster on disks with
    /// slow `fsync`.
    Normal,
}

impl SyncMode {
    /// The name used in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Normal => "normal",
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Store`] in an SQLite file, written by a group-committing thread.
///
/// The file is created readable by its owner only (it holds password hashes and token
/// secrets). `write` never waits, whatever the disk's speed: the writer's queue is counted in
/// [`Store::backlog`], and the server's readers stop taking frames while it is over its limit.
/// The methods that wait for a commit (`save_session`, `delete_session`, `flush`, and `load`
/// and `sessions`, which flush first) only queue when called from an `on_commit` callback,
/// which runs on the writer thread. Dropping the store lets the writer commit everything
/// queued, then joins the thread.
pub struct SqliteStore {
    path: PathBuf,
    sync: SyncMode,
    /// Queue of the writer thread; `None` once dropped.
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    writer_id: ThreadId,
    /// The connection that reads (`load`, `sessions`).
    reader: Mutex<Connection>,
    /// Writes queued for the writer thread and not committed yet.
    backlog: Arc<Backlog>,
    /// The lock file `<path>.lock`, locked while the store is open (dropped last, after the
    /// writer has committed everything).
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates, with its parent directory) the store at `path`, migrating an older
    /// layout, and starts its writer thread.
    ///
    /// Fails with [`StoreError::Database`], naming the file, if it is not a Sealbus store (not
    /// an SQLite database, another application's database, or a newer schema), or cannot be
    /// created or locked.
    pub fn open(path: &Path, sync: SyncMode) -> Result<SqliteStore, StoreError> {
        let context = |err: StoreError| match err {
            StoreError::Database(message) => {
                StoreError::Database(format!("{}: {message}", path.display()))
            }
            other => other,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Database(format!("creating directory {}: {err}", parent.display()))
            })?;
        }
        let lock = lock_exclusively(path)?;
        create_private(path)
            .map_err(|err| StoreError::Database(format!("creating {}: {err}", path.display())))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(db_error)
            .map_err(context)?;
        schema::prepare_writer(&mut conn, sync).map_err(context)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error)
        .map_err(context)?;
        schema::prepare_reader(&reader).map_err(context)?;

        let (jobs, queue) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let writer = Writer::new(conn, backlog.clone());
        let handle = std::thread::Builder::new()
            .name("sealbus-store".into())
            .spawn(move || writer.run(queue))
            .map_err(|err| StoreError::Database(format!("starting the store writer: {err}")))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            sync,
            jobs: Some(jobs),
            writer_id: handle.thread().id(),
            writer: Some(handle),
            reader: Mutex::new(reader),
            backlog,
            _lock: lock,
        })
    }

    /// The file's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability mode.
    pub fn sync(&self) -> SyncMode {
        self.sync
    }

    /// Queues a job; if the writer has stopped, fails its callback at once.
    fn submit(&self, job: Job) {
        let weight = job.weight();
        self.backlog.add(weight);
        let rejected = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|rejected| rejected.0),
            None => Some(job),
        };
        if let Some(job) = rejected {
            self.backlog.remove(weight);
            if let Some(done) = job.done {
                done(Err(&StoreError::Stopped));
            }
        }
    }

    /// Queues `op` and waits for its commit. On the writer thread itself (inside an `on_commit`
    /// callback) it only queues: waiting there would wait forever.
    fn submit_and_wait(&self, op: Op) -> Result<(), StoreError> {
        if std::thread::current().id() == self.writer_id {
            self.submit(Job { op, done: None });
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let done: OnCommit = Box::new(move |result| {
            let _ = tx.send(result.map_err(owned));
        });
        self.submit(Job {
            op,
            done: Some(done),
        });
        rx.recv().unwrap_or(Err(StoreError::Stopped))
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for SqliteStore {
    fn save_session(&self, record: &SessionRecord) {
        if let Err(err) = self.submit_and_wait(Op::SaveSession(Box::new(record.clone()))) {
            tracing::error!(error = %err, session = %record.name, "store: could not save a session");
        }
    }

    fn delete_session(&self, name: &str) {
        if let Err(err) = self.submit_and_wait(Op::DeleteSession(name.to_owned())) {
            tracing::error!(error = %err, session = %name, "store: could not delete a session");
        }
    }

    fn sessions(&self) -> Vec<SessionRecord> {
        if let Err(err) = self.flush() {
            tracing::error!(error = %err, "store: reading sessions without the latest writes");
        }
        load::sessions(&self.reader()).unwrap_or_else(|err| {
            tracing::error!(error = %err, "store: could not read the sessions");
            Vec::new()
        })
    }

    fn load(&self, session: &str) -> Result<SessionData, StoreError> {
        self.flush()?;
        load::session(&mut self.reader(), session)
    }

    fn write(&self, session: &str, writes: Vec<Write>, on_commit: Option<OnCommit>) {
        if writes.is_empty() && on_commit.is_none() {
            return;
        }
        self.submit(Job {
            op: Op::Write {
                session: session.to_owned(),
                writes,
            },
            done: on_commit,
        });
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.submit_and_wait(Op::Barrier)
    }

    fn backlog(&self) -> Option<&Backlog> {
        Some(&self.backlog)
    }
}

/// Dropping the store closes its queue: the writer commits what is queued, runs the callbacks
/// and exits, and the drop waits for it (unless it runs on the writer thread itself, when an
/// `on_commit` callback held the last handle).
impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(handle) = self.writer.take()
            && handle.thread().id() != std::thread::current().id()
            && handle.join().is_err()
        {
            tracing::error!("store: the writer thread panicked");
        }
    }
}

/// Creates `<path>.lock` (owner-only) and takes an exclusive lock on it, held for the store's
/// life: one server per store file. The kernel releases it when the process dies, so a server
/// killed with SIGKILL does not block its restart. A separate file, because SQLite's own
/// locks on the database file are released when any descriptor of that file is closed.
fn lock_exclusively(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&lock_path)
        .map_err(|err| StoreError::Database(format!("creating {}: {err}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::Locked(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(err)) => Err(StoreError::Database(format!(
            "locking {}: {err}",
            lock_path.display()
        ))),
    }
}

/// Creates the database file, if missing, readable and writable by its owner only: it holds
/// password hashes and token secrets. SQLite gives its `-wal` and `-shm` files the database
/// file's permissions.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// A database error as a [`StoreError`].
fn db_error(err: rusqlite::Error) -> StoreError {
    StoreError::Database(err.to_string())
}

/// An owned copy of a borrowed error (callbacks get a reference).
fn owned(err: &StoreError) -> StoreError {
    match err {
        StoreError::Database(message) => StoreError::Database(message.clone()),
        StoreError::Stopped => StoreError::Stopped,
        StoreError::Locked(path) => StoreError::Locked(path.clone()),
    }
}

/// A `u64` that is only stored and read back (a timestamp), as the same 64 bits in SQLite's
/// signed INTEGER.
fn u64_bits(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of [`u64_bits`].
fn u64_from_bits(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests;

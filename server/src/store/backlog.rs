//! [`Backlog`]: how many writes a store has queued and not yet committed, so that readers can
//! stop taking frames from their sockets while the disk is behind.
//!
//! `Store::write` never waits (the broker calls it under a session's lock). Without a bound, a
//! publisher faster than the disk (QoS 0 messages are written to the history too) would grow
//! the store's queue, and the server's memory, without limit. Instead, each connection's reader
//! waits for [`Backlog::room`] before handling what it read: TCP then slows the publishers down.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Queued writes above which readers wait (about five of the SQLite writer's groups; ~20 MB of
/// 128-byte messages).
pub const BACKLOG_LIMIT: usize = 100_000;

/// Writes queued in a store and not yet committed.
#[derive(Debug)]
pub struct Backlog {
    queued: AtomicUsize,
    limit: AtomicUsize,
    room: Notify,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            queued: AtomicUsize::new(0),
            limit: AtomicUsize::new(BACKLOG_LIMIT),
            room: Notify::new(),
        }
    }
}

impl Backlog {
    /// Writes queued and not committed yet.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether readers should wait.
    pub fn is_full(&self) -> bool {
        self.queued() >= self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit (tests use a small one).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Returns once the backlog is below its limit.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// `writes` were queued.
    pub(crate) fn add(&self, writes: usize) {
        self.queued.fetch_add(writes, Ordering::Relaxed);
    }

    /// `writes` were committed (or failed): they leave the backlog.
    pub(crate) fn remove(&self, writes: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                Some(queued.saturating_sub(writes))
            });
        if !self.is_full() {
            self.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_go_on_once_the_backlog_is_below_its_limit() {
        let backlog = Arc::new(Backlog::default());
        backlog.set_limit(10);
        backlog.room().await;
        backlog.add(12);
        assert!(backlog.is_full());
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while full");
        backlog.remove(2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "10 of 10 is still full");
        backlog.remove(1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter goes on")
            .expect("no panic");
        backlog.remove(100);
        assert_eq!(backlog.queued(), 0);
    }
}

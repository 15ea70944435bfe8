//! The table both kinds of Redis job (invalidations and enforcements) live in: accepted
//! idempotently by id (a running or succeeded job answers for itself, a failed one runs
//! again), finished ones kept for `keep_finished` and evicted oldest first when the table is
//! full, each with a notifier that cancels it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use super::CacheLimits;
use crate::api::{CaptureState, ErrorCode};

/// A job's status, as far as the table needs to read it.
pub trait JobStatus: Clone {
    /// Where the job stands.
    fn state(&self) -> CaptureState;
}

/// One job in the table.
pub struct Entry<S> {
    /// What it reports.
    pub status: S,
    /// When it ended.
    pub finished: Option<Instant>,
    /// Wakes the job to stop.
    pub cancel: Arc<tokio::sync::Notify>,
}

/// What [`Table::admit`] did with a request.
pub enum Admission<S> {
    /// A job of that id answers for it.
    Existing(S),
    /// A new job was entered: run it, stopping when this is notified.
    New(Arc<tokio::sync::Notify>),
}

/// Jobs by id.
pub struct Table<S>(Arc<Mutex<HashMap<String, Entry<S>>>>);

impl<S> Clone for Table<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<S: JobStatus> Table<S> {
    /// The table, locked.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry<S>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Enters a job of `id` reporting `running`, unless one of that id answers for it; a
    /// full table refuses with 429 (`what` names the jobs in the message).
    pub fn admit(
        &self,
        id: &str,
        running: S,
        limits: &CacheLimits,
        what: &str,
    ) -> Result<Admission<S>, (ErrorCode, String)> {
        let mut table = self.lock();
        // The same id is the same work; a failed job runs again, so a retry can finish it.
        if let Some(existing) = table.get(id)
            && (existing.finished.is_none() || existing.status.state() != CaptureState::Failed)
        {
            return Ok(Admission::Existing(existing.status.clone()));
        }
        let keep = limits.keep_finished;
        table.retain(|_, e| e.finished.is_none_or(|f| f.elapsed() < keep));
        while table.len() >= limits.max_jobs {
            let Some(oldest) = table.iter().filter_map(|(id, e)| e.finished.map(|f| (f, id.clone()))).min() else {
                return Err((
                    ErrorCode::TooManyRequests,
                    format!("too many {what} in progress ({}); retry later", table.len()),
                ));
            };
            table.remove(&oldest.1);
        }
        let cancel = Arc::new(tokio::sync::Notify::new());
        table.insert(id.to_owned(), Entry { status: running, finished: None, cancel: cancel.clone() });
        Ok(Admission::New(cancel))
    }

    /// Stops a running job; a finished one is left as it is. Its status either way.
    pub fn cancel(&self, id: &str) -> Option<S> {
        let table = self.lock();
        let entry = table.get(id)?;
        if entry.finished.is_none() {
            entry.cancel.notify_one();
        }
        Some(entry.status.clone())
    }

    /// A job's status.
    pub fn status(&self, id: &str) -> Option<S> {
        self.lock().get(id).map(|e| e.status.clone())
    }
}

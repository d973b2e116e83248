//! Group commit for the audit log: one writer thread turns the records of many concurrent
//! calls into one SQLite transaction.
//!
//! A call waits until its pending record is committed before its credential leaves the
//! proxy (the write-ahead rule), so under load many calls wait at once. The writer takes
//! everything queued while its previous commit ran and commits it together, which costs
//! one commit instead of one per call. A call's outcome (its second record) is queued
//! without waiting: the committed pending entry already proves the credential's use, and
//! the outcome rides along with the next batch. When the writer is gone, records are
//! written directly, so none is dropped.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use agentsecrets_store::audit::{NewAuditEntry, Outcome};
use agentsecrets_store::{AuditLog, StoreError};
use tokio::sync::oneshot;

/// The most records one transaction takes, so one commit never holds the log for long.
const MAX_BATCH: usize = 512;

/// How long dropping the engine waits for queued outcomes to be committed.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What a failed commit reports to every call that waited on it.
pub type CommitError = Arc<StoreError>;

// Every call sends one of each, so boxing the larger would add an allocation per call
// and save nothing.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// Commit a pending entry, then say its id.
    Begin { entry: NewAuditEntry, done: oneshot::Sender<Result<String, CommitError>> },
    /// Settle an entry's outcome; nobody waits for it.
    Complete { id: String, outcome: Outcome },
}

/// Queues records for the writer thread; cheap to clone, one per call in flight.
#[derive(Clone)]
pub struct AuditWriter {
    log: Arc<AuditLog>,
    jobs: mpsc::Sender<Job>,
}

/// Owns the writer thread: dropping it waits (briefly) for the queue to drain.
pub struct WriterThread {
    // In a mutex only so that the engine holding it can be shared between threads.
    finished: Mutex<mpsc::Receiver<()>>,
}

impl AuditWriter {
    /// Starts the writer thread over `log`.
    pub fn start(log: Arc<AuditLog>) -> std::io::Result<(AuditWriter, WriterThread)> {
        let (jobs, queue) = mpsc::channel();
        let (finish, finished) = mpsc::channel();
        let thread_log = log.clone();
        std::thread::Builder::new().name("audit-writer".to_owned()).spawn(move || {
            write_batches(&thread_log, &queue);
            let _ = finish.send(());
        })?;
        Ok((AuditWriter { log, jobs }, WriterThread { finished: Mutex::new(finished) }))
    }

    /// Commits a pending entry for a call about to use a credential and returns its id
    /// once the commit is done.
    pub async fn begin(&self, entry: NewAuditEntry) -> Result<String, CommitError> {
        let (done, committed) = oneshot::channel();
        if let Err(mpsc::SendError(job)) = self.jobs.send(Job::Begin { entry, done }) {
            let Job::Begin { entry, .. } = job else { unreachable!("the job just sent") };
            return self.log.begin(&entry).map_err(Arc::new);
        }
        match committed.await {
            Ok(result) => result,
            // The writer stopped without answering (it panicked): the record may not exist,
            // so the call is refused as for any audit failure.
            Err(_) => Err(Arc::new(StoreError::Invalid("the audit writer stopped".to_owned()))),
        }
    }

    /// Queues the outcome of entry `id`; written directly when the writer is gone.
    pub fn complete(&self, id: String, outcome: Outcome) {
        if let Err(mpsc::SendError(Job::Complete { id, outcome })) =
            self.jobs.send(Job::Complete { id, outcome })
            && let Err(err) = self.log.complete(&id, &outcome)
        {
            tracing::error!(error = %err, audit.id = %id, "cannot settle an audit entry");
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        // The thread ends once every `AuditWriter` is gone and the queue is written.
        let finished = self.finished.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if finished.recv_timeout(DRAIN_WAIT).is_err() {
            tracing::debug!("audit writer still busy at shutdown; pending entries stay pending");
        }
    }
}

/// The writer thread: wait for one job, take every job queued behind it, commit them
/// all in one transaction, answer the waiting calls; until every sender is gone.
fn write_batches(log: &AuditLog, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(log, batch);
    }
}

fn commit(log: &AuditLog, batch: Vec<Job>) {
    let pending = pending_outcome();
    let mut completions: Vec<(&str, &Outcome)> = Vec::new();
    let mut appends: Vec<(&NewAuditEntry, &Outcome)> = Vec::new();
    for job in &batch {
        match job {
            Job::Begin { entry, .. } => appends.push((entry, &pending)),
            Job::Complete { id, outcome } => completions.push((id, outcome)),
        }
    }

    let result = log.commit_batch(&completions, &appends).map_err(Arc::new);
    if let Err(err) = &result
        && !completions.is_empty()
    {
        tracing::error!(error = %err, entries = completions.len(), "cannot settle audit entries");
    }

    let mut ids = result.map(Vec::into_iter);
    let mut abandoned = Vec::new();
    for job in batch {
        if let Job::Begin { done, .. } = job {
            let answer = match &mut ids {
                Ok(ids) => ids.next().ok_or_else(|| {
                    Arc::new(StoreError::Invalid("the audit batch lost an entry".to_owned()))
                }),
                Err(err) => Err(err.clone()),
            };
            // The caller left while its record was being written: no credential will be
            // used, so the entry is settled as such instead of staying pending.
            if let Err(Ok(id)) = done.send(answer) {
                abandoned.push(id);
            }
        }
    }
    settle_abandoned(log, &abandoned);
}

fn settle_abandoned(log: &AuditLog, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let outcome = Outcome {
        status: agentsecrets_core::audit::CallStatus::Error,
        reason: "client_closed".to_owned(),
        status_code: None,
        duration_ms: 0,
        redacted: false,
    };
    let completions: Vec<(&str, &Outcome)> = ids.iter().map(|id| (id.as_str(), &outcome)).collect();
    if let Err(err) = log.commit_batch(&completions, &[]) {
        tracing::error!(error = %err, "cannot settle the entries of callers that left");
    }
}

/// The outcome of an entry whose call has not ended yet.
fn pending_outcome() -> Outcome {
    Outcome {
        status: agentsecrets_core::audit::CallStatus::Pending,
        reason: "-".to_owned(),
        status_code: None,
        duration_ms: 0,
        redacted: false,
    }
}

#[cfg(test)]
mod tests {
    use agentsecrets_core::audit::CallStatus;
    use agentsecrets_store::fixture::synthetic_entry;
    use agentsecrets_store::{AuditQuery, Home};

    use super::*;

    fn open_log(dir: &std::path::Path) -> Arc<AuditLog> {
        Arc::new(AuditLog::open(&Home::at(dir.join("home"))).expect("open the audit log"))
    }

    fn entry(i: u64) -> (NewAuditEntry, Outcome) {
        synthetic_entry(i, 1000, jiff::Timestamp::now(), 1, "ws")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_each_get_a_committed_record_and_the_chain_holds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path());
        let (writer, thread) = AuditWriter::start(log.clone()).expect("start the writer");

        let calls: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let (new, outcome) = entry(i);
                    let id = writer.begin(new).await.expect("the record is committed");
                    writer.complete(id.clone(), outcome);
                    id
                })
            })
            .collect();
        let mut ids = Vec::new();
        for call in calls {
            ids.push(call.await.expect("the call task"));
        }
        drop(writer);
        drop(thread);

        let entries = log.query(&AuditQuery::default()).expect("query");
        assert_eq!(entries.len(), 200);
        assert!(entries.iter().all(|e| e.status != CallStatus::Pending), "every outcome settled");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "one distinct entry per call");
        let report = log.verify(None).expect("verify");
        assert_eq!(report.first_problem, None);
    }

    #[tokio::test]
    async fn a_caller_that_leaves_before_its_record_is_committed_is_settled_not_pending() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path());
        let (writer, thread) = AuditWriter::start(log.clone()).expect("start the writer");

        // Another process holds the log's write lock, so the commit waits; meanwhile the
        // caller gives up. The lock is released well within the writer's busy timeout.
        let blocker = rusqlite::Connection::open(dir.path().join("home/audit.db")).expect("open");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("lock the log");
        let waiting = tokio::time::timeout(Duration::from_millis(20), writer.begin(entry(0).0));
        assert!(waiting.await.is_err(), "the commit cannot finish while the log is locked");
        blocker.execute_batch("COMMIT").expect("unlock the log");
        drop(writer);
        drop(thread);

        let entries = log.query(&AuditQuery::default()).expect("query");
        let statuses: Vec<_> = entries.iter().map(|e| (e.status, e.reason.as_str())).collect();
        assert_eq!(statuses, [(CallStatus::Error, "client_closed")]);
    }
}

//! Group commit of declarations.
//!
//! Declarations come in bursts (an alert storm, a whole team typing `/incident declare`
//! at once), and each one is a write transaction of several statements: number, state,
//! timeline, outbox rows, timers, lanes. Committed one by one they queue on the store's
//! writer (SQLite has exactly one) and every ack waits for all the transactions ahead of
//! it. So declarations go through one intake task: it takes every declaration waiting,
//! writes them all in ONE transaction with one multi-row statement per kind of row, and
//! answers each caller after the commit. Alone, a declaration is a batch of one (no
//! waiting for company); under load, batches grow by themselves to the arrivals during
//! the previous commit, and the cost per declaration falls as the load rises.
//!
//! Nothing is acknowledged before it is committed. If a batch fails, its declarations
//! are retried one by one, so one bad declaration cannot fail its neighbours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Engine, EngineError, Outcome, RequestMeta};
use crate::domain::incident::{self, Decision};
use crate::domain::severity::Severity;
use crate::store::Backend;

/// Most declarations committed in one transaction.
const MAX_BATCH: usize = 128;

/// One declaration waiting for the intake.
pub(super) struct DeclareJob {
    pub(super) meta: RequestMeta,
    pub(super) severity: Severity,
    pub(super) title: String,
    /// Declared with `--security`.
    pub(super) security: bool,
    pub(super) answer: oneshot::Sender<Result<Outcome, EngineError>>,
}

/// The intake task has stopped (the runtime is shutting down).
#[derive(Debug)]
pub(super) struct Closed;

/// The handle the engine sends declarations through (started on first use, so an engine
/// can be built outside a runtime).
#[derive(Debug, Default)]
pub(super) struct Intake {
    queue: std::sync::OnceLock<mpsc::UnboundedSender<DeclareJob>>,
    stats: Arc<IntakeStats>,
}

/// Counts of what the intake committed (for tests and metrics): how much grouping the
/// load produced.
#[derive(Debug, Default)]
pub struct IntakeStats {
    transactions: AtomicU64,
    declarations: AtomicU64,
}

impl IntakeStats {
    /// `(transactions committed, declarations committed in them)`.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.transactions.load(Ordering::Relaxed),
            self.declarations.load(Ordering::Relaxed),
        )
    }

    fn committed(&self, declarations: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.declarations
            .fetch_add(declarations as u64, Ordering::Relaxed);
    }
}

impl Intake {
    /// Queues a declaration; the intake task is started by the first one. `engine` is the
    /// engine the task commits through (its own intake is never used).
    pub(super) fn send(&self, engine: &Engine, job: DeclareJob) -> Result<(), Closed> {
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
            for _ in 0..committers(engine.store.backend()) {
                tokio::spawn(run(engine.detached(), jobs.clone(), self.stats.clone()));
            }
            queue
        });
        queue.send(job).map_err(|_| Closed)
    }

    /// What the intake committed so far.
    pub(super) fn stats(&self) -> &IntakeStats {
        &self.stats
    }
}

/// How many batches commit at once: SQLite has one writer, so one; PostgreSQL commits
/// concurrent transactions in parallel (and a commit waits for its WAL flush), so a few,
/// each taking what is waiting when it is free.
fn committers(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 4,
    }
}

/// An intake task: until every engine handle is gone, takes what is waiting (when no
/// other committer holds the queue) and commits it.
async fn run(
    engine: Engine,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<DeclareJob>>>,
    stats: Arc<IntakeStats>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if jobs.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let taken = std::mem::take(&mut batch);
        let alone = taken.len() == 1;
        match commit_batch(&engine, taken).await {
            Ok(answered) => answer(&stats, answered),
            Err((jobs, e)) if alone => answer_one(jobs, e),
            Err((jobs, e)) => {
                tracing::warn!(error = %e, count = jobs.len(), "declaration batch failed; committing them one by one");
                for job in jobs {
                    match commit_batch(&engine, vec![job]).await {
                        Ok(answered) => answer(&stats, answered),
                        Err((job, e)) => answer_one(job, e),
                    }
                }
            }
        }
    }
}

/// Answers the one job of a failed batch of one with its error.
fn answer_one(jobs: Vec<DeclareJob>, e: EngineError) {
    if let Some(job) = jobs.into_iter().next() {
        let _ = job.answer.send(Err(e));
    }
}

type Answered = Vec<(DeclareJob, Result<Outcome, EngineError>)>;

fn answer(stats: &IntakeStats, answered: Answered) {
    stats.committed(answered.iter().filter(|(_, o)| o.is_ok()).count());
    for (job, outcome) in answered {
        // The caller may have gone (its HTTP request was dropped): the declaration
        // stands, committed; there is nobody to tell.
        let _ = job.answer.send(outcome);
    }
}

/// Commits `jobs` in one transaction and returns each one's answer. `Err` hands them
/// all back with the first error, store or domain (the transaction is rolled back:
/// nothing of them was committed).
async fn commit_batch(
    engine: &Engine,
    jobs: Vec<DeclareJob>,
) -> Result<Answered, (Vec<DeclareJob>, EngineError)> {
    let now = engine.clock.now();
    let mut tx = match engine.store.begin().await {
        Ok(tx) => tx,
        Err(e) => return Err((jobs, e.into())),
    };
    // Inbound events seen before (a retried form submission) are answered as such.
    let mut new = Vec::new();
    let mut seen = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let is_new = match &job.meta.dedupe {
            Some((source, id)) => tx.record_inbound(source, id, now).await,
            None => Ok(true),
        };
        match is_new {
            Ok(true) => new.push(i),
            Ok(false) => seen.push(i),
            Err(e) => return Err((jobs, e.into())),
        }
    }
    let ids = if new.is_empty() {
        Vec::new()
    } else {
        match tx.allocate_incident_ids(new.len(), now).await {
            Ok(ids) => ids,
            Err(e) => return Err((jobs, e.into())),
        }
    };
    let mut decisions: Vec<(usize, Decision)> = Vec::with_capacity(new.len());
    for (&i, id) in new.iter().zip(ids) {
        let job = &jobs[i];
        match incident::declare(
            id,
            job.severity,
            &job.title,
            &job.meta.actor,
            now,
            engine.policy(),
        ) {
            Ok(mut decision) => {
                crate::domain::stakeholders::on_declare(
                    &mut decision,
                    job.security,
                    now,
                    engine.policy().stakeholders,
                );
                decisions.push((i, decision))
            }
            // Titles are checked before queueing; should the domain refuse anyway, the
            // batch is retried one by one and only this caller hears why.
            Err(refused) => return Err((jobs, refused.into())),
        }
    }
    let written = if decisions.is_empty() {
        tx.commit().await.map(|_| ()).map_err(EngineError::from)
    } else {
        let pairs: Vec<(&RequestMeta, &Decision)> =
            decisions.iter().map(|(i, d)| (&jobs[*i].meta, d)).collect();
        engine.commit_many(tx, &pairs, now).await
    };
    if let Err(e) = written {
        return Err((jobs, e));
    }
    let mut outcomes: Vec<Option<Result<Outcome, EngineError>>> =
        jobs.iter().map(|_| None).collect();
    for i in seen {
        outcomes[i] = Some(Err(EngineError::Duplicate));
    }
    for (i, decision) in decisions {
        tracing::info!(incident = %decision.incident.id, severity = %decision.incident.severity, "incident declared");
        outcomes[i] = Some(Ok(Outcome {
            incident: decision.incident,
            reply: decision.reply,
        }));
    }
    Ok(jobs
        .into_iter()
        .zip(outcomes)
        .map(|(job, outcome)| (job, outcome.expect("every declaration answered")))
        .collect())
}

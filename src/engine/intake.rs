//! Group commit of declarations, in two steps.
//!
//! Declarations come in bursts (an alert storm, a whole team typing `/incident declare`
//! at once), and each one is several rows: number, state, timeline, outbox rows, timers,
//! lanes. Slack wants the slash command answered within 3 s, and the answer only needs
//! the declaration to be *durable*, not all of its rows. So:
//!
//! 1. **Acknowledge.** One task takes every declaration waiting and commits them in ONE
//!    short transaction: a `declaring` incident row each (number allocated, what was
//!    asked kept as JSON; see `store::declarations`), plus the dedupe of retried form
//!    submissions. The domain then declares each (pure, once) and the caller that only
//!    needs the ack (`Engine::declare_acked`) is answered.
//! 2. **Write out.** Another task takes the acknowledged declarations waiting and writes
//!    their state, timeline, outbox rows, timers and lanes with one multi-row statement
//!    per kind, in ONE transaction that first *claims* the rows (`declaring` ->
//!    written). Callers that change the incident next (`Engine::declare`) are answered
//!    after this commit.
//!
//! The ack is as cheap as the one INSERT any handler must do, and it no longer waits for
//! the write-out of the declarations ahead of it. Nothing is lost in between: a process
//! that dies after step 1 leaves `declaring` rows, which any process completes from the
//! stored declaration ([`complete_pending`]: at start-up, then every few seconds), the
//! same as step 2 would have, exactly once thanks to the claim.
//!
//! Alone, a declaration is a batch of one at each step (no waiting for company); under
//! load, batches grow by themselves to the arrivals during the previous commit. If a
//! batch fails, its declarations are retried one by one, so one bad declaration cannot
//! fail its neighbours.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{Engine, EngineError, Outcome, RequestMeta};
use crate::domain::incident::{self, Decision, IncidentId};
use crate::domain::severity::Severity;
use crate::store::{Backend, Declaration};

mod stats;
pub use stats::IntakeStats;

/// Most declarations acknowledged in one transaction.
const MAX_ACK_BATCH: usize = 128;
// An ack batch is one INSERT statement (see `acknowledge`).
const _: () = assert!(MAX_ACK_BATCH <= crate::store::MAX_ROWS_PER_INSERT);
/// Most declarations written out in one transaction. On SQLite, smaller than the ack
/// batch: an ack that arrives while a write-out holds the writer waits for it, so a
/// write-out is kept to about a millisecond. PostgreSQL writes beside the acks, and
/// there every transaction costs its claim, a statement per kind and a commit whatever
/// its size: with batches of four, the load bench (`declare`) made 4,141 write-outs for
/// 12,588 declarations, so it takes up to 32 at once (with the plan fixes beside it,
/// the write-outs finished 16-22 s after the last ack of 40,000 instead of 50 s).
fn max_write_batch(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 4,
        Backend::Postgres => 32,
    }
}
/// Most stale declarations completed per pass of [`complete_pending`].
const MAX_PENDING_PASS: i64 = 200;

/// When the caller of a declaration is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// Once the declaration is durable (step 1).
    Acked,
    /// Once everything is written (step 2).
    Written,
}

/// One declaration waiting for the intake.
pub(super) struct DeclareJob {
    pub(super) meta: RequestMeta,
    pub(super) severity: Severity,
    pub(super) title: String,
    /// Declared with `--security`.
    pub(super) security: bool,
    pub(super) wait: Wait,
    pub(super) answer: oneshot::Sender<Result<Outcome, EngineError>>,
}

/// An acknowledged declaration waiting to be written out.
struct WriteJob {
    meta: RequestMeta,
    decision: Decision,
    /// When it was acknowledged: the time of its events, outbox rows and timers.
    at: DateTime<Utc>,
    /// The caller waiting for the write-out, if any.
    answer: Option<oneshot::Sender<Result<Outcome, EngineError>>>,
}

/// The intake task has stopped (the runtime is shutting down).
#[derive(Debug)]
pub(super) struct Closed;

/// The handle the engine sends declarations through (its tasks are started on first use,
/// so an engine can be built outside a runtime).
#[derive(Debug, Default)]
pub(super) struct Intake {
    queue: std::sync::OnceLock<mpsc::UnboundedSender<DeclareJob>>,
    stats: Arc<IntakeStats>,
}

impl Intake {
    /// Queues a declaration; the intake tasks are started by the first one. `engine` is
    /// the engine the tasks commit through (its own intake is never used).
    pub(super) fn send(&self, engine: &Engine, job: DeclareJob) -> Result<(), Closed> {
        let queue = self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::unbounded_channel();
            let (writes, write_jobs) = mpsc::unbounded_channel();
            let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
            let write_jobs = Arc::new(tokio::sync::Mutex::new(write_jobs));
            let backend = engine.store.backend();
            for _ in 0..committers(backend, Step::Acknowledge) {
                tokio::spawn(acknowledge_loop(
                    engine.detached(),
                    jobs.clone(),
                    writes.clone(),
                    self.stats.clone(),
                ));
            }
            for _ in 0..committers(backend, Step::WriteOut) {
                tokio::spawn(write_loop(
                    writer_engine(engine),
                    write_jobs.clone(),
                    self.stats.clone(),
                ));
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

/// The engine the write-outs commit through. On SQLite their transactions take the
/// background's turn at the one writer (see `store::writer_gate`): an acknowledgement
/// never waits for a write-out that has not begun yet, and the write-outs catch up
/// between acknowledgements (the declarations are durable already; their first timer is
/// minutes away, and Slack paces channel creation far below any burst anyway).
fn writer_engine(engine: &Engine) -> Engine {
    let mut writer = engine.detached();
    if engine.store.backend() == Backend::Sqlite
        && let Ok(background) = engine.store.for_background()
    {
        writer.store = background;
    }
    writer
}

/// How many batches are in hand at once, at each step. PostgreSQL commits concurrent
/// transactions in parallel (and a commit waits for its WAL flush), so a few, each taking
/// what is waiting when it is free (two write-outs, whose batches are larger). SQLite
/// has one writer: four acknowledgement batches, so the next ones are already waiting
/// for the writer (in the requests' queue, ahead of the background loops: see
/// `store::writer_gate`) while the current one commits (load bench, `declare`: p50
/// about 3.3x the floor with two, 1.7x-2.7x with four, in noisy
/// runs), and one write-out.
fn committers(backend: Backend, step: Step) -> usize {
    match (backend, step) {
        (Backend::Sqlite, Step::Acknowledge) => 4,
        (Backend::Sqlite, Step::WriteOut) => 1,
        (Backend::Postgres, Step::Acknowledge) => 4,
        (Backend::Postgres, Step::WriteOut) => 2,
    }
}

/// The intake's two steps.
#[derive(Clone, Copy)]
enum Step {
    Acknowledge,
    WriteOut,
}

/// Step 1, until every engine handle is gone: takes what is waiting (when no other
/// acknowledger holds the queue), commits it, answers, and passes it on to step 2.
async fn acknowledge_loop(
    engine: Engine,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<DeclareJob>>>,
    writes: mpsc::UnboundedSender<WriteJob>,
    stats: Arc<IntakeStats>,
) {
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    loop {
        if jobs.lock().await.recv_many(&mut batch, MAX_ACK_BATCH).await == 0 {
            return;
        }
        let taken = std::mem::take(&mut batch);
        let alone = taken.len() == 1;
        match acknowledge(&engine, taken).await {
            Ok(acked) => pass_on(&engine, &stats, acked, &writes).await,
            Err((jobs, e)) if alone => answer_one(jobs, e),
            Err((jobs, e)) => {
                tracing::warn!(error = %e, count = jobs.len(), "declaration batch failed; acknowledging them one by one");
                stats.split.fetch_add(1, Ordering::Relaxed);
                for job in jobs {
                    match acknowledge(&engine, vec![job]).await {
                        Ok(acked) => pass_on(&engine, &stats, acked, &writes).await,
                        Err((jobs, e)) => answer_one(jobs, e),
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

/// What step 1 made of one job.
enum Acked {
    /// Its incident row, with the time it was acknowledged.
    Declared(IncidentId, DateTime<Utc>),
    /// A retried form submission seen before.
    Duplicate,
}

/// Commits `jobs`' declarations in one transaction. `Err` hands them all back with the
/// first error (rolled back: nothing of them was committed).
async fn acknowledge(
    engine: &Engine,
    jobs: Vec<DeclareJob>,
) -> Result<Vec<(DeclareJob, Acked)>, (Vec<DeclareJob>, EngineError)> {
    let now = engine.clock.now();
    // Slash commands carry no dedupe id: their rows are one INSERT, committed alone.
    if jobs.iter().all(|j| j.meta.dedupe.is_none()) {
        let declarations: Vec<Declaration> = jobs.iter().map(declaration_of).collect();
        return match engine
            .store
            .insert_declarations_now(&declarations, now)
            .await
        {
            Ok(ids) => Ok(jobs
                .into_iter()
                .zip(ids)
                .map(|(job, id)| (job, Acked::Declared(id, now)))
                .collect()),
            Err(e) => Err((jobs, e.into())),
        };
    }
    let mut tx = match engine.store.begin().await {
        Ok(tx) => tx,
        Err(e) => return Err((jobs, e.into())),
    };
    let mut fresh = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let is_new = match &job.meta.dedupe {
            Some((source, id)) => tx.record_inbound(source, id, now).await,
            None => Ok(true),
        };
        match is_new {
            Ok(is_new) => fresh.push(is_new),
            Err(e) => return Err((jobs, e.into())),
        }
    }
    let declarations: Vec<Declaration> = jobs
        .iter()
        .zip(&fresh)
        .filter(|(_, is_new)| **is_new)
        .map(|(job, _)| declaration_of(job))
        .collect();
    let ids = if declarations.is_empty() {
        Vec::new()
    } else {
        match tx.insert_declarations(&declarations, now).await {
            Ok(ids) => ids,
            Err(e) => return Err((jobs, e.into())),
        }
    };
    if let Err(e) = tx.commit().await {
        return Err((jobs, e.into()));
    }
    let mut ids = ids.into_iter();
    Ok(jobs
        .into_iter()
        .zip(fresh)
        .map(|(job, is_new)| {
            let acked = if is_new {
                Acked::Declared(ids.next().expect("a number per declaration"), now)
            } else {
                Acked::Duplicate
            };
            (job, acked)
        })
        .collect())
}

/// What `job` asked, as stored with its `declaring` row.
fn declaration_of(job: &DeclareJob) -> Declaration {
    Declaration {
        severity: job.severity,
        title: job.title.clone(),
        security: job.security,
        actor: job.meta.actor.clone(),
        request_id: job.meta.request_id.clone(),
    }
}

/// After step 1: the domain declares each incident (once), callers waiting for the ack
/// are answered, and everything goes on to step 2.
async fn pass_on(
    engine: &Engine,
    stats: &IntakeStats,
    acked: Vec<(DeclareJob, Acked)>,
    writes: &mpsc::UnboundedSender<WriteJob>,
) {
    let declared = acked
        .iter()
        .filter(|(_, a)| matches!(a, Acked::Declared(..)))
        .count();
    stats.ack_transactions.fetch_add(1, Ordering::Relaxed);
    stats.acked.fetch_add(declared as u64, Ordering::Relaxed);
    for (job, acked) in acked {
        let (id, at) = match acked {
            Acked::Duplicate => {
                let _ = job.answer.send(Err(EngineError::Duplicate));
                continue;
            }
            Acked::Declared(id, at) => (id, at),
        };
        let decision = match declaration_decided(
            engine,
            id,
            &job.meta,
            job.severity,
            &job.title,
            job.security,
            at,
        ) {
            Ok(decision) => decision,
            Err(refused) => {
                // Titles are checked before queueing, so this should not happen; if it
                // does, the row goes (nothing else was written for it) and only this
                // caller hears why.
                drop_refused(engine, id).await;
                let _ = job.answer.send(Err(refused.into()));
                continue;
            }
        };
        tracing::info!(incident = %id, severity = %decision.incident.severity, "incident declared");
        let answer = match job.wait {
            Wait::Acked => {
                let _ = job.answer.send(Ok(outcome_of(&decision)));
                None
            }
            Wait::Written => Some(job.answer),
        };
        stats.queued_for_write(at);
        let write = WriteJob {
            meta: job.meta,
            decision,
            at,
            answer,
        };
        if let Err(mpsc::error::SendError(write)) = writes.send(write) {
            // Shutting down: the row stays `declaring` and is completed at the next
            // start.
            stats.write_attempted([write.at]);
            if let Some(answer) = write.answer {
                let _ = answer.send(Err(EngineError::Unavailable));
            }
        }
    }
}

/// The domain's declaration of incident `id` as of `at`, with what stakeholders and a
/// security flag add to it: the same whether run after the ack or after a crash.
fn declaration_decided(
    engine: &Engine,
    id: IncidentId,
    meta: &RequestMeta,
    severity: Severity,
    title: &str,
    security: bool,
    at: DateTime<Utc>,
) -> Result<Decision, crate::domain::incident::DomainError> {
    let mut decision = incident::declare(id, severity, title, &meta.actor, at, engine.policy())?;
    crate::domain::stakeholders::on_declare(
        &mut decision,
        security,
        at,
        engine.policy().stakeholders,
        &[],
    );
    Ok(decision)
}

fn outcome_of(decision: &Decision) -> Outcome {
    Outcome {
        incident: decision.incident.clone(),
        reply: decision.reply.clone(),
    }
}

async fn drop_refused(engine: &Engine, id: IncidentId) {
    let dropped = async {
        let mut tx = engine.store.begin().await?;
        tx.drop_declaration(id).await?;
        tx.commit().await
    };
    if let Err(e) = dropped.await {
        tracing::error!(incident = %id, error = %e, "could not drop a refused declaration");
    }
}

/// Step 2, until the acknowledgers are gone: takes what is waiting (when no other writer
/// holds the queue) and writes it out.
async fn write_loop(
    engine: Engine,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<WriteJob>>>,
    stats: Arc<IntakeStats>,
) {
    let most = max_write_batch(engine.store.backend());
    let mut batch = Vec::with_capacity(most);
    loop {
        if jobs.lock().await.recv_many(&mut batch, most).await == 0 {
            return;
        }
        let taken = std::mem::take(&mut batch);
        let ats: Vec<DateTime<Utc>> = taken.iter().map(|job| job.at).collect();
        write_out_answering(&engine, &stats, taken).await;
        stats.write_attempted(ats);
    }
}

/// Writes `jobs` out (one transaction, or one by one if that fails) and answers their
/// callers. A declaration that cannot be written stays `declaring`, for
/// [`complete_pending`] to try again.
async fn write_out_answering(engine: &Engine, stats: &IntakeStats, jobs: Vec<WriteJob>) {
    let alone = jobs.len() == 1;
    let jobs = match write_out(engine, stats, jobs).await {
        Ok(()) => return,
        Err((jobs, e)) if alone => {
            fail_writes(jobs, e);
            return;
        }
        Err((jobs, e)) => {
            tracing::warn!(error = %e, count = jobs.len(), "write-out batch failed; writing them one by one");
            stats.split.fetch_add(1, Ordering::Relaxed);
            jobs
        }
    };
    for job in jobs {
        if let Err((jobs, e)) = write_out(engine, stats, vec![job]).await {
            fail_writes(jobs, e);
        }
    }
}

/// After a failed write-out of one: the declaration stands (it is acknowledged and stored)
/// and will be completed from its stored form, so its caller is told it was declared, not
/// to try again (which would declare a second incident).
fn fail_writes(jobs: Vec<WriteJob>, e: EngineError) {
    if let Some(job) = jobs.into_iter().next() {
        tracing::error!(incident = %job.decision.incident.id, error = %e, "declared incident not written out yet; it will be completed from its declaration");
        if let Some(answer) = job.answer {
            let _ = answer.send(Ok(outcome_of(&job.decision)));
        }
    }
}

/// Writes the claimed ones of `jobs` in one transaction and answers every caller
/// (a declaration someone else claimed is written too: by them).
async fn write_out(
    engine: &Engine,
    stats: &IntakeStats,
    jobs: Vec<WriteJob>,
) -> Result<(), (Vec<WriteJob>, EngineError)> {
    let mut tx = match engine.store.begin().await {
        Ok(tx) => tx,
        Err(e) => return Err((jobs, e.into())),
    };
    let ids: Vec<IncidentId> = jobs.iter().map(|j| j.decision.incident.id).collect();
    let claimed = match tx.claim_declarations(&ids).await {
        Ok(claimed) => claimed,
        Err(e) => return Err((jobs, e.into())),
    };
    let mine: Vec<&WriteJob> = jobs
        .iter()
        .filter(|j| claimed.binary_search(&j.decision.incident.id).is_ok())
        .collect();
    // One write per acknowledgement time (a batch usually holds one or two).
    let mut rest = mine.as_slice();
    while let Some(first) = rest.first() {
        let same = rest.iter().take_while(|j| j.at == first.at).count();
        let pairs: Vec<(&RequestMeta, &Decision)> = rest[..same]
            .iter()
            .map(|j| (&j.meta, &j.decision))
            .collect();
        if let Err(e) = engine.write_decisions(&mut tx, &pairs, first.at).await {
            return Err((jobs, e));
        }
        rest = &rest[same..];
    }
    match tx.commit().await {
        Ok(committed) => engine.woke(committed),
        Err(e) => return Err((jobs, e.into())),
    }
    stats.write_transactions.fetch_add(1, Ordering::Relaxed);
    stats
        .written
        .fetch_add(claimed.len() as u64, Ordering::Relaxed);
    for job in jobs {
        if let Some(answer) = job.answer {
            let _ = answer.send(Ok(outcome_of(&job.decision)));
        }
    }
    Ok(())
}

/// Completes the declarations acknowledged before `before` and still `declaring` (their
/// process died between the two steps), from what each stored: the domain declares it
/// again, as of its acknowledgement, and it is written out like step 2 would have. Run
/// at start-up and every few seconds; beside other processes doing the same, each row is
/// written once (the claim). Returns how many this call wrote.
pub(super) async fn complete_pending(
    engine: &Engine,
    before: DateTime<Utc>,
) -> Result<usize, EngineError> {
    let stats = IntakeStats::default();
    loop {
        let pending = engine
            .store
            .pending_declarations(before, MAX_PENDING_PASS)
            .await?;
        if pending.is_empty() {
            break;
        }
        let mut jobs = Vec::with_capacity(pending.len());
        for p in &pending {
            let meta = RequestMeta {
                actor: p.declaration.actor.clone(),
                request_id: p.declaration.request_id.clone(),
                dedupe: None,
            };
            match declaration_decided(
                engine,
                p.id,
                &meta,
                p.declaration.severity,
                &p.declaration.title,
                p.declaration.security,
                p.at,
            ) {
                Ok(decision) => jobs.push(WriteJob {
                    meta,
                    decision,
                    at: p.at,
                    answer: None,
                }),
                Err(refused) => {
                    tracing::error!(incident = %p.id, error = %refused, "a stored declaration is refused now; dropping it");
                    drop_refused(engine, p.id).await;
                }
            }
        }
        while !jobs.is_empty() {
            let most = max_write_batch(engine.store.backend());
            let chunk: Vec<WriteJob> = jobs.drain(..jobs.len().min(most)).collect();
            write_out(engine, &stats, chunk).await.map_err(|(_, e)| e)?;
        }
        if pending.len() < MAX_PENDING_PASS as usize {
            break;
        }
    }
    let written = stats.totals().1 as usize;
    if written > 0 {
        tracing::warn!(
            count = written,
            "completed declarations a stopped process had acknowledged but not written out"
        );
    }
    Ok(written)
}

//! The background loops (outbox worker, retention, LISTEN) run on their own runtime, on
//! threads the OS schedules after the HTTP handlers'. The scheduler, and the outbox's
//! claims and settles, run on threads of their own at normal priority (see
//! [`spawn_on_own_thread`]).
//!
//! Why: an acknowledgement has a deadline and a delivery does not. Slack shows the user
//! an error if a slash command is not answered within 3 seconds, and people then type
//! the command again (a second incident); a channel created or a message posted 200 ms
//! later harms nobody, and Slack's own pacing (one post per second per channel) spaces
//! them anyway. Under a burst the deliveries behind the acks would otherwise take half the
//! CPU from the handlers (each declaration is several Slack calls to make), so the ack
//! waits on work nobody is waiting for. The background threads get a lower priority
//! (`nice` +10): when the CPU is free they run at full speed; when the handlers need it
//! they get it first, and the deliveries catch up right after. Nothing is dropped: the
//! outbox is durable, only later.
//!
//! The SQLite writer is shared: it is handed out by `store::writer_gate`, requests'
//! transactions before the background loops' (measured: running the background threads at
//! normal priority instead changed neither the acks' latency nor how long a background
//! transaction holds the writer, so the priority causes no inversion there).

use std::future::Future;

/// How much lower the background threads' priority is (Linux `nice`, 0..19).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by `nice` (Linux: per thread). A
/// failure only costs the priority, so it is logged, not raised.
pub fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), current + nice) {
            tracing::warn!(error = %e, "could not lower the background threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Runs `loops` to completion on a new runtime of `threads` worker threads at background
/// priority, on a thread of its own; the returned handle yields its output.
pub fn spawn<F>(threads: usize, loops: F) -> std::io::Result<std::thread::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("klaxon-background")
        .on_thread_start(|| lower_this_thread(BACKGROUND_NICE))
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("klaxon-background".into())
        .spawn(move || {
            lower_this_thread(BACKGROUND_NICE);
            runtime.block_on(loops)
        })
}

/// Runs `task` on a new thread of its own, in a single-threaded runtime at normal
/// priority; the returned handle yields its output.
///
/// For a loop whose time is mostly transactions on the SQLite writer (the scheduler). Each
/// statement is a hand-over to the driver's thread and a wake-up back; on the busy
/// background runtime that wake-up waits its turn behind hundreds of deliveries, and the
/// writer stays held meanwhile, holding up everyone else's transactions. Here the thread
/// only waits for the database, so it resumes as soon as a statement is done. Normal
/// priority: a thread that holds the writer must not be preempted by the handlers that
/// wait for it.
pub fn spawn_on_own_thread<F>(
    name: &str,
    task: F,
) -> std::io::Result<std::thread::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(task))
}

/// A thread of its own for a loop's store transactions, started with
/// [`StoreThread::start`]: the outbox worker's claims and settles run there (see
/// [`spawn_on_own_thread`] for why). It stops when the last handle is dropped.
#[derive(Debug)]
pub struct StoreThread {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the thread's runtime.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StoreThread {
    /// Starts the thread (at the calling thread's priority: start it from outside the
    /// background runtime).
    pub fn start(name: &str) -> std::io::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (sender, handle) = std::sync::mpsc::channel();
        spawn_on_own_thread(name, async move {
            let _ = sender.send(tokio::runtime::Handle::current());
            let _ = stopped.await;
        })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the store thread did not start"))?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Where to spawn the store work.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loops_run_at_a_lower_priority_and_return_their_output() {
        let handle = spawn(1, async {
            let outer = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
            let inner = tokio::spawn(async {
                rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            })
            .await
            .expect("task");
            (outer.expect("priority"), inner.expect("priority"))
        })
        .expect("background thread");
        let (outer, inner) = handle.join().expect("joined");
        let mine = rustix::process::getpriority_process(None).expect("priority");
        assert_eq!(
            inner,
            (mine + BACKGROUND_NICE).min(19),
            "runtime worker thread"
        );
        assert_eq!(
            outer,
            (mine + BACKGROUND_NICE).min(19),
            "the driving thread"
        );
    }

    #[test]
    fn store_work_runs_on_the_store_thread_at_the_starting_threads_priority() {
        let thread = StoreThread::start("klaxon-test-store").expect("store thread");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (name, priority) = runtime
            .block_on(thread.handle().spawn(async {
                (
                    std::thread::current().name().map(str::to_string),
                    rustix::process::getpriority_process(Some(rustix::thread::gettid())),
                )
            }))
            .expect("the work ran");
        assert_eq!(name.as_deref(), Some("klaxon-test-store"));
        assert_eq!(
            priority.expect("priority"),
            rustix::process::getpriority_process(None).expect("priority")
        );
    }
}

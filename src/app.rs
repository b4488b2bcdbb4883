//! Wiring: builds the store, engine, HTTP state and outbox worker from a [`Config`], and
//! runs them. `main.rs` only parses the command line and calls in here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::commands::catalog::{self, Catalog, CatalogErrors};
use crate::commands::environments;
use crate::commands::execution::Recovery;
use crate::config::{self, Config};
use crate::domain::timeline;
use crate::engine::{Engine, PolicySet, Wakers};
use crate::http::{self, AppState};
use crate::outbox::{OutboxWorker, Outlets};
use crate::paging::PagerDuty;
use crate::scheduler::Scheduler;
use crate::slack::SlackApi;
use crate::slack::morphism::MorphismSlack;
use crate::store::Store;

/// Everything a running Klaxon is made of.
pub struct Services {
    /// State for the HTTP handlers.
    pub state: AppState,
    /// The outbox worker (run it with [`OutboxWorker::run`] or drive `deliver_due`).
    pub worker: OutboxWorker,
    /// The timer scheduler (run it with [`Scheduler::run`] or drive `fire_due`).
    pub scheduler: Scheduler,
    /// What wakes the worker and the scheduler (for the PostgreSQL LISTEN task).
    pub wakers: Wakers,
}

/// Connects to the database (migrating it) and wires the parts together.
pub async fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    slack: Arc<dyn SlackApi>,
) -> anyhow::Result<Services> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", config::redact_url(&config.database_url)))?;
    store.migrate().await.context("running migrations")?;
    Ok(wire(store, config, clock, slack))
}

/// Wires the parts around an already migrated store, without recovery commands.
pub fn wire(
    store: Store,
    config: &Config,
    clock: Arc<dyn Clock>,
    slack: Arc<dyn SlackApi>,
) -> Services {
    wire_with(
        store,
        config,
        clock,
        slack,
        Recovery {
            dry_run: config.recovery.dry_run,
            ..Recovery::default()
        },
    )
}

/// Wires the parts around an already migrated store, with a recovery catalog and
/// executors.
pub fn wire_with(
    store: Store,
    config: &Config,
    clock: Arc<dyn Clock>,
    slack: Arc<dyn SlackApi>,
    recovery: Recovery,
) -> Services {
    // Every Slack call, from the worker or a handler, is counted for /metrics.
    let slack = crate::slack::instrumented::Instrumented::wrap(slack);
    let wakers = Wakers::default();
    let policy = PolicySet {
        severities: config.severities.clone(),
        calendar: config.calendar.clone(),
        escalation: config.escalation.clone(),
        stakeholders: config.stakeholders.policy.clone(),
    };
    // The loops get connections of their own (PostgreSQL), so request bursts cannot
    // starve delivery; they share the wakers, so a request's commit wakes them.
    let background_store = store.for_background().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no reserved connections for the background loops; sharing the request pool");
        store.clone()
    });
    let engine = Engine::new(store, clock.clone(), policy.clone(), wakers.clone());
    let policy_for_scheduler = policy.clone();
    let background = Engine::new(background_store, clock.clone(), policy, wakers.clone());
    let slack_for_state = slack.clone();
    let outlets = Outlets {
        slack,
        pagerduty: PagerDuty::new(&config.pagerduty_events_url),
        announce_channel: config.slack.incident_response_channel.clone(),
        targets: Arc::new(config.targets.clone()),
        recovery: recovery.clone(),
        pagerduty_rest: config.pagerduty.api_token.clone().map(|token| {
            Arc::new(crate::paging::rest::PagerDutyRest::new(
                &config.pagerduty.api_url,
                token,
                config.pagerduty.from_email.clone(),
                config.pagerduty.api_timeout,
            ))
        }),
        resolve_in_pagerduty: config.pagerduty.resolve_in_pagerduty,
        notify: notifier(config),
    };
    let worker = OutboxWorker::new(
        background.clone(),
        outlets,
        clock.clone(),
        wakers.outbox.clone(),
        config.delivery,
    );
    // The scheduler gets connections of its own too: with 10,000 reminders coming due at
    // once, their deliveries (64 in flight, each reading its incident) would otherwise
    // queue the firing of the rest behind them on one pool (PostgreSQL; SQLite shares
    // its one writer anyway).
    let scheduler_engine = match background.store().for_background() {
        Ok(own) => Engine::new(own, clock.clone(), policy_for_scheduler, wakers.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "no connections of its own for the scheduler; sharing the background pool");
            background.clone()
        }
    };
    let scheduler = Scheduler::new(scheduler_engine, clock.clone(), wakers.scheduler.clone());
    let state = AppState {
        engine,
        signing_secrets: Arc::new(config.slack.signing_secrets.clone()),
        clock,
        catalog: recovery.catalog,
        groups: crate::slack::groups::GroupDirectory::new(slack_for_state.clone()),
        slack: slack_for_state,
        note_reactions: Arc::new(config.timeline.note_reactions.clone()),
        identity: Arc::new(http::Identity::from_config(config)),
        intake: Arc::new(config.intake.clone()),
        announce_channel: config.slack.incident_response_channel.as_str().into(),
        pagerduty: Arc::new(config.pagerduty.clone()),
    };
    Services {
        state,
        worker,
        scheduler,
        wakers,
    }
}

/// `klaxon serve`: HTTP server plus outbox worker until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(config = %config.describe(), "starting klaxon");
    http::Identity::from_config(&config)
        .require()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let slack = MorphismSlack::new(&config.slack.api_url, config.slack.bot_token.clone())
        .context("building the Slack client")?;
    let catalog = load_catalog(&config)
        .map_err(|e| anyhow::anyhow!("the command catalog is broken:\n{e}"))?;
    let recovery = Recovery {
        catalog: Arc::new(catalog),
        executors: environments::build_default(&config.recovery).await,
        environments: environments::build(&config.recovery).await,
        dry_run: config.recovery.dry_run,
        call_timeout: config.recovery.call_timeout,
        ..Recovery::default()
    };
    if config.recovery.dry_run {
        tracing::warn!("recovery.execution = dry-run: every recovery command stops at its preview");
    }
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", config::redact_url(&config.database_url)))?;
    store.migrate().await.context("running migrations")?;
    let services = wire_with(
        store,
        &config,
        Arc::new(SystemClock),
        Arc::new(slack),
        recovery,
    );
    // Declarations a stopped process acknowledged but did not write out: before serving,
    // so their channels and posts join the first deliveries.
    crate::scheduler::declarations::complete_all(&services.state.engine, &SystemClock).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let socket_stop = stop_rx.clone();
    // The loops run on their own runtime at a lower OS priority: acks first, deliveries
    // right after (see `background`).
    let background = {
        let store = services.state.engine.store().clone();
        let wakers = services.wakers.clone();
        let (keep, every) = (config.retention.keep, config.retention.every);
        // The worker's leases name this instance (host and port: two live processes
        // cannot share both), so after a crash the restarted process takes back its
        // predecessor's lanes at once instead of waiting for their leases to run out.
        let instance = format!(
            "{}:{}",
            rustix::system::uname().nodename().to_string_lossy(),
            config.listen.port()
        );
        // The store threads are started from here, not from the background runtime, whose
        // lower priority a new thread would inherit.
        let worker = services.worker.for_instance(&instance).with_store_thread(
            crate::background::StoreThread::start("klaxon-outbox-store")
                .context("starting the outbox's store thread")?,
        );
        let scheduler = services.scheduler;
        let declarations = crate::scheduler::declarations::run(
            services.state.engine.clone(),
            Arc::new(SystemClock),
            crate::scheduler::declarations::EVERY,
            stop_rx.clone(),
        );
        let home = crate::listen::home::HomeRefresher::new(
            services.state.engine.clone(),
            Arc::new(SystemClock),
            config.intake.home_refresh,
        );
        let scheduler = crate::background::spawn_on_own_thread(
            "klaxon-scheduler",
            scheduler.run(stop_rx.clone()),
        )
        .context("starting the scheduler")?;
        crate::background::spawn(2, async move {
            let notifications = {
                let (store, stop) = (store.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    store
                        .listen_for_commits(wakers.outbox, wakers.scheduler, stop)
                        .await
                })
            };
            let retention = tokio::spawn(crate::scheduler::retention::run(
                store,
                Arc::new(SystemClock),
                keep,
                every,
                stop_rx.clone(),
            ));
            let home = tokio::spawn(home.run(stop_rx.clone()));
            let declarations = tokio::spawn(declarations);
            let worker = tokio::spawn(worker.run(stop_rx));
            worker.await.context("outbox worker")?;
            home.await.context("App Home refresher")?;
            tokio::task::spawn_blocking(move || scheduler.join())
                .await
                .context("scheduler")?
                .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;
            notifications.await.context("LISTEN task")?;
            retention.await.context("retention")?;
            declarations.await.context("declarations")?;
            anyhow::Ok(())
        })
        .context("starting the background loops")?
    };
    // Socket Mode when an app token is set: the same handlers, no public URL needed. It
    // carries acknowledgements, so it stays on the handlers' runtime.
    let socket = config.intake.app_token.clone().map(|token| {
        tracing::info!("SLACK_APP_TOKEN set: connecting through Socket Mode");
        let client = crate::http::socket::SocketMode::new(
            services.state.clone(),
            token,
            crate::http::socket::SocketSettings::new(&config.slack.api_url),
        );
        tokio::spawn(client.run(socket_stop))
    });
    let engine = services.state.engine.clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, "listening");
    axum::serve(listener, http::app(services.state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")?;
    // Write out what was acknowledged (milliseconds; what is left is completed at the
    // next start), then let the worker finish the row it is delivering; anything left
    // stays in the outbox for the next start.
    if tokio::time::timeout(Duration::from_secs(10), engine.declarations_written())
        .await
        .is_err()
    {
        tracing::warn!(
            "acknowledged declarations not all written out; the next start completes them"
        );
    }
    let _ = stop_tx.send(true);
    tokio::task::spawn_blocking(move || background.join())
        .await
        .context("background loops")?
        .map_err(|_| anyhow::anyhow!("the background loops panicked"))??;
    if let Some(socket) = socket {
        socket.await.context("Socket Mode")?;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Loads the approved command catalog named by the config, and refuses it when a command
/// names an environment the config does not define.
pub fn load_catalog(config: &Config) -> Result<Catalog, CatalogErrors> {
    let catalog = catalog::load_dir(&config.recovery.catalog_dir)?;
    environments::check_catalog(
        &catalog,
        &config.recovery.catalog_dir,
        &config.recovery.environments,
    )?;
    Ok(catalog)
}

/// `klaxon totp enrol USER`: prints the otpauth URI for the user's authenticator app.
pub async fn totp_enrol(config: &Config, user: &str) -> anyhow::Result<String> {
    let key = config.recovery.totp_key.as_ref().ok_or_else(|| {
        anyhow::anyhow!("KLAXON_TOTP_KEY is not set (64 hex characters; `openssl rand -hex 32`)")
    })?;
    let store = Store::connect(&config.database_url)
        .await
        .context("connecting")?;
    store.migrate().await.context("running migrations")?;
    crate::totp::enrol(&store, key, user, chrono::Utc::now())
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// `klaxon migrate`.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let store = Store::connect(database_url).await.context("connecting")?;
    store.migrate().await.context("running migrations")?;
    println!("migrations applied to {}", config::redact_url(database_url));
    Ok(())
}

/// `klaxon audit verify`: recomputes every incident's hash chain. Returns the number of
/// entries checked, or the first break.
pub async fn audit_verify(database_url: &str) -> anyhow::Result<usize> {
    let store = Store::connect(database_url).await.context("connecting")?;
    audit_store(&store).await
}

/// Verifies every incident's chain in `store`.
pub async fn audit_store(store: &Store) -> anyhow::Result<usize> {
    let mut checked = 0;
    for id in store.incident_ids().await? {
        let entries = store.timeline_for_audit(id).await??;
        timeline::verify(&entries)?;
        checked += entries.len();
    }
    Ok(checked)
}

/// Loads the config for a CLI command: `--config`, else `./klaxon.toml` when present.
/// `with_secrets` false lets verbs that only read config and catalog run without the
/// Slack secrets.
pub fn load_config(path: Option<&Path>, with_secrets: bool) -> Result<Config, config::ConfigError> {
    let default = Path::new("klaxon.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    if with_secrets {
        Config::load(path, &config::process_env)
    } else {
        Config::load_without_secrets(path, &config::process_env)
    }
}

/// The stakeholder email and status page clients the config asks for. A client that
/// cannot be built is logged; its rows then fail with the reason (kept, and said in
/// #incident-response) instead of stopping the server.
fn notifier(config: &Config) -> crate::notify::Notifier {
    let stake = &config.stakeholders;
    let mailer = stake.email.as_ref().and_then(|e| {
        crate::notify::Mailer::new(e)
            .inspect_err(|err| tracing::error!(error = %err, "cannot set up stakeholder email"))
            .ok()
    });
    let statuspage = stake.statuspage.clone().and_then(|s| {
        crate::notify::Statuspage::new(s)
            .inspect_err(|err| tracing::error!(error = %err, "cannot set up Statuspage"))
            .ok()
    });
    crate::notify::Notifier { mailer, statuspage }
}

/// The engine the CLI verbs use: the configured store and policy, the system clock, and
/// no loops (what it enqueues is delivered by the running server).
async fn cli_engine(config: &Config) -> anyhow::Result<Engine> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", config::redact_url(&config.database_url)))?;
    store.migrate().await.context("running migrations")?;
    let policy = PolicySet {
        severities: config.severities.clone(),
        calendar: config.calendar.clone(),
        escalation: config.escalation.clone(),
        stakeholders: config.stakeholders.policy.clone(),
    };
    Ok(Engine::new(
        store,
        Arc::new(SystemClock),
        policy,
        Wakers::default(),
    ))
}

/// Parses `7` or `INC-7`.
pub fn parse_incident_number(text: &str) -> anyhow::Result<crate::domain::incident::IncidentId> {
    let digits = text
        .trim()
        .strip_prefix("INC-")
        .or_else(|| text.trim().strip_prefix("inc-"))
        .unwrap_or(text.trim());
    match digits.parse::<i64>() {
        Ok(n) if n > 0 => Ok(crate::domain::incident::IncidentId(n)),
        _ => Err(anyhow::anyhow!(
            "number: `{text}` is not an incident number (e.g. 7 or INC-7)"
        )),
    }
}

/// `klaxon postmortem <number>`: writes, stores and queues a draft; returns its Markdown.
pub async fn postmortem(config: &Config, number: &str) -> anyhow::Result<String> {
    let id = parse_incident_number(number)?;
    let engine = cli_engine(config).await?;
    let meta = crate::engine::RequestMeta {
        actor: crate::domain::incident::Actor::Klaxon,
        request_id: format!("cli-{}", uuid::Uuid::new_v4().simple()),
        dedupe: None,
    };
    match engine.draft_postmortem(&meta, id).await {
        Ok(drafted) => Ok(drafted.markdown),
        Err(crate::engine::EngineError::NotFound(id)) => {
            Err(anyhow::anyhow!("{id} does not exist"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `klaxon report --since 30d`: the response-time table of incidents declared since.
pub async fn report(config: &Config, since: &str) -> anyhow::Result<String> {
    let window = humantime::parse_duration(since).map_err(|e| {
        anyhow::anyhow!("--since: `{since}` is not a duration like 30d or 12h ({e})")
    })?;
    let window = chrono::TimeDelta::from_std(window)
        .map_err(|_| anyhow::anyhow!("--since: `{since}` is too long"))?;
    let engine = cli_engine(config).await?;
    report_from(
        engine.store(),
        &config.severities,
        chrono::Utc::now(),
        window,
    )
    .await
}

/// The report over `store` at `now` (tests pass a fixed `now`).
pub async fn report_from(
    store: &Store,
    severities: &crate::domain::severity::SeverityPolicies,
    now: chrono::DateTime<chrono::Utc>,
    window: chrono::TimeDelta,
) -> anyhow::Result<String> {
    let since = now - window;
    let mut times = Vec::new();
    for id in store.incidents_declared_since(since).await? {
        let entries = store.timeline(id).await?;
        if let Some(t) = crate::domain::response_times::from_record(&entries) {
            times.push(t);
        }
    }
    Ok(format!(
        "Incidents declared since {} ({}):\n{}",
        crate::domain::narrative::utc(since),
        times.len(),
        crate::domain::response_times::report_table(&times, severities, now)
    ))
}

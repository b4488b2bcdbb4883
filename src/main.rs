//! The `klaxon` binary: parses the command line and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the outbox worker and the SQLite thread spent
/// 10-15 % of their CPU in glibc's `malloc`/`free` (perf, first-wave benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Klaxon: an incident-response bot for Slack.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Defaults to ./klaxon.toml when it exists; see
    /// deploy/klaxon.example.toml for every key.
    #[arg(long, global = true, env = "KLAXON_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bot: HTTP endpoints for Slack plus the outbox worker.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and the command catalog; exits non-zero naming the
    /// key (or file, key and rule) and the problem.
    Check,
    /// The approved recovery command catalog.
    Commands {
        #[command(subcommand)]
        action: CommandsAction,
    },
    /// TOTP step-up for approvals (commands with `step_up = "totp"`).
    Totp {
        #[command(subcommand)]
        action: TotpAction,
    },
    /// Write an incident's post-mortem draft from its record: printed here, stored, and
    /// uploaded to its channel by the running server's outbox.
    Postmortem {
        /// Incident number (7 or INC-7).
        number: String,
    },
    /// Response times per severity (acknowledge, mitigate, resolve) as a table.
    Report {
        /// How far back, e.g. 30d, 12h, 8w.
        #[arg(long, default_value = "30d")]
        since: String,
    },
    /// Audit the timeline.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print the Slack app manifest (scopes, /incident, events, interactivity) to create
    /// the app from (api.slack.com/apps > Create New App > From an app manifest).
    SlackManifest {
        /// Slack delivers over Socket Mode (SLACK_APP_TOKEN): no request URLs.
        #[arg(long, conflicts_with = "url")]
        socket_mode: bool,
        /// Public base URL Slack calls, e.g. https://klaxon.example.com.
        #[arg(long, required_unless_present = "socket_mode")]
        url: Option<String>,
        /// Output format.
        #[arg(long, value_parser = ["yaml", "json"], default_value = "yaml")]
        format: String,
    },
}

#[derive(Subcommand)]
enum CommandsAction {
    /// One line per approved command.
    List,
    /// Everything about one command: parameters, rules, who may request and approve.
    Show {
        /// Command name, e.g. rds-failover-cluster.
        name: String,
    },
}

#[derive(Subcommand)]
enum TotpAction {
    /// Enrol a Slack user: prints the otpauth:// URI for their authenticator app (once;
    /// the secret is stored encrypted with KLAXON_TOTP_KEY). Re-enrolling replaces it.
    Enrol {
        /// Slack user id, e.g. U0123ABCD.
        user: String,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Recompute every incident's hash chain and report the first break.
    Verify,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    klaxon::tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The manifest depends on nothing but the code and the arguments.
    if let Command::SlackManifest {
        socket_mode,
        url,
        format,
    } = &cli.command
    {
        use klaxon::slack::manifest::{self, Transport};
        let transport = match (socket_mode, url) {
            (true, _) => Transport::SocketMode,
            (false, Some(url)) => match manifest::base_url(url) {
                Ok(base_url) => Transport::Http { base_url },
                Err(e) => {
                    eprintln!("klaxon: {e}");
                    return ExitCode::from(2);
                }
            },
            (false, None) => unreachable!("clap requires --url without --socket-mode"),
        };
        let value = manifest::manifest(&transport);
        if format == "json" {
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        } else {
            print!("{}", manifest::to_yaml(&value));
        }
        return ExitCode::SUCCESS;
    }
    // Only `serve` talks to Slack; reviewing config and catalog needs no secrets.
    let with_secrets = matches!(cli.command, Command::Serve);
    let config = match klaxon::app::load_config(cli.config.as_deref(), with_secrets) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("klaxon: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Check => klaxon::app::load_catalog(&config)
            .map_err(|e| anyhow::anyhow!("command catalog:\n{e}"))
            .and_then(|catalog| {
                klaxon::http::Identity::from_config(&config)
                    .require()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("config OK: {}", config.describe());
                if !config.has_secrets() {
                    println!("Slack secrets not set: `serve` needs SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN");
                }
                println!(
                    "catalog OK: {} commands in {}",
                    catalog.iter().count(),
                    config.recovery.catalog_dir.display()
                );
                Ok(())
            }),
        // Reviewing the catalog needs neither secrets nor the environments it will run in.
        Command::Commands { action } => match klaxon::commands::catalog::load_dir(&config.recovery.catalog_dir) {
            Err(e) => Err(anyhow::anyhow!("command catalog:\n{e}")),
            Ok(catalog) => match action {
                CommandsAction::List => {
                    catalog
                        .list_lines()
                        .iter()
                        .for_each(|line| println!("{line}"));
                    Ok(())
                }
                CommandsAction::Show { name } => match catalog.describe(&name) {
                    Some(text) => {
                        println!("{text}");
                        Ok(())
                    }
                    None => Err(anyhow::anyhow!(
                        "no command named `{name}`; `klaxon commands list` shows them"
                    )),
                },
            },
        },
        Command::Serve => klaxon::app::serve(config).await,
        Command::Migrate => klaxon::app::migrate(&config.database_url).await,
        Command::Totp {
            action: TotpAction::Enrol { user },
        } => klaxon::app::totp_enrol(&config, &user)
            .await
            .map(|uri| println!("{uri}")),
        Command::Postmortem { number } => klaxon::app::postmortem(&config, &number)
            .await
            .map(|markdown| {
                print!("{markdown}");
                eprintln!("draft stored; the running server's outbox uploads it to the incident channel (on SQLite at its next wake-up)");
            }),
        Command::Report { since } => klaxon::app::report(&config, &since)
            .await
            .map(|table| print!("{table}")),
        Command::Audit {
            action: AuditAction::Verify,
        } => klaxon::app::audit_verify(&config.database_url)
            .await
            .map(|n| println!("timeline intact: {n} entries verified")),
        Command::SlackManifest { .. } => unreachable!("handled before the config is loaded"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("klaxon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `klaxon` binary itself: `check` names bad keys, and `serve` runs end to end over
//! real TCP with its outbox worker delivering to the Slack emulator, then stops on SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use klaxon::http::verify::sign;
use support::slack_emulator::SlackEmulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_klaxon");

fn klaxon(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    cmd
}

const SECRETS: &[(&str, &str)] = &[
    ("SLACK_SIGNING_SECRET", support::SECRET),
    ("SLACK_BOT_TOKEN", "xoxb-cli"),
];

#[test]
fn check_accepts_the_example_config() {
    let out = klaxon(
        &["check", "--config", "deploy/klaxon.example.toml"],
        SECRETS,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("config OK"), "{stdout}");
    assert!(
        !stdout.contains("xoxb-cli") && !stdout.contains(support::SECRET),
        "secrets must not be printed"
    );
}

#[test]
fn check_names_the_broken_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[slack]\nincident_response_channel = \"C0123456789\"\n[team]\ntimezone = \"Mars/Olympus\"\n").unwrap();
    let out = klaxon(&["check", "--config", path.to_str().unwrap()], SECRETS)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config key `team.timezone`: `Mars/Olympus` is not an IANA time zone"),
        "{stderr}"
    );

    // `serve` needs the Slack secrets; reviewing config and catalog does not (issue 8).
    let out = klaxon(&["serve", "--config", "deploy/klaxon.example.toml"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLACK_SIGNING_SECRET"));
    for args in [
        &["check", "--config", "deploy/klaxon.example.toml"][..],
        &["commands", "list", "--config", "deploy/klaxon.example.toml"],
        &[
            "commands",
            "show",
            "k8s-scale",
            "--config",
            "deploy/klaxon.example.toml",
        ],
    ] {
        let out = klaxon(args, &[]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = klaxon(&["check", "--config", "deploy/klaxon.example.toml"], &[])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Slack secrets not set"));

    // A config without the app's identity, or without an environment the catalog names.
    let example = std::fs::read_to_string("deploy/klaxon.example.toml").unwrap();
    std::fs::write(&path, example.replace("team_id = \"T0123456789\"", "")).unwrap();
    let out = klaxon(&["check", "--config", path.to_str().unwrap()], SECRETS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config key `slack.team_id`: missing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let without_staging = example.replace(
        "[recovery.environments.staging]",
        "[recovery.environments.qa]",
    );
    std::fs::write(&path, without_staging).unwrap();
    let out = klaxon(&["check", "--config", path.to_str().unwrap()], SECRETS)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("params.environment.values[1]: environment `staging` is not configured"),
        "{stderr}"
    );

    std::fs::write(
        &path,
        "[slack]\nincident_response_channel = \"C0123456789\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let out = klaxon(&["check", "--config", path.to_str().unwrap()], SECRETS)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3") && stderr.contains("unknown field `colour`"),
        "{stderr}"
    );
}

/// Issue 9: `klaxon check` validates `[pagerduty]`, accepting the README's worked example
/// and naming the key and the rule of a broken one.
#[test]
fn check_validates_the_pagerduty_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pd.toml");
    let catalog = dir.path().join("commands");
    std::fs::create_dir(&catalog).unwrap();
    let base = format!(
        "[slack]\nincident_response_channel = \"C0123456789\"\nteam_id = \"T0123\"\napp_id = \"A0123\"\n[recovery]\ncatalog_dir = {:?}\n",
        catalog.display().to_string()
    );
    let example = r#"
[pagerduty]
from_email = "klaxon-bot@example.com"
default_severity = "SEV2"
priorities = { P1 = "SEV1", P2 = "SEV2", P3 = "SEV3" }
urgencies = { high = "SEV2", low = "SEV3" }
storm_window = "5m"

[pagerduty.services.PIJ90N7]
team = "payments"
stakeholder_groups = ["customers", "finance"]

[pagerduty.users]
PXPGF42 = "U0123ABCD"
PAM4FGS = "lela@example.com"
"#;
    let pd_env = [
        ("KLAXON_PAGERDUTY_WEBHOOK_SECRET", "old,new"),
        ("KLAXON_PAGERDUTY_API_TOKEN", "u+token-never-printed"),
    ];
    let env: Vec<(&str, &str)> = SECRETS.iter().copied().chain(pd_env).collect();
    std::fs::write(&path, format!("{base}{example}")).unwrap();
    let out = klaxon(&["check", "--config", path.to_str().unwrap()], &env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pagerduty_webhook_secrets=2 pagerduty_rest=on"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("u+token") && !stdout.contains("old,new"),
        "{stdout}"
    );

    for (broken, expected) in [
        (
            example.replace("P1 = \"SEV1\"", "P1 = \"urgent\""),
            "config key `pagerduty.priorities.P1`: `urgent` is not a severity",
        ),
        (
            example.replace("PAM4FGS = \"lela@example.com\"", "PAM4FGS = \"lela\""),
            "config key `pagerduty.users.PAM4FGS`: `lela` is neither a Slack user id",
        ),
        (
            example.replace("from_email = \"klaxon-bot@example.com\"\n", ""),
            "config key `pagerduty.from_email`: missing",
        ),
        (
            example.replace("storm_window = \"5m\"", "storm_window = \"a while\""),
            "config key `pagerduty.storm_window`",
        ),
    ] {
        std::fs::write(&path, format!("{base}{broken}")).unwrap();
        let out = klaxon(&["check", "--config", path.to_str().unwrap()], &env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("u+token"), "{stderr}");
    }
}

async fn http(port: u16, request: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serve_declares_over_tcp_delivers_and_stops_on_sigterm() {
    let slack = SlackEmulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("klaxon.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = SECRETS.to_vec();
    env.extend([
        ("KLAXON_SLACK_API_URL", slack.base_url.as_str()),
        ("KLAXON_DATABASE_URL", db.as_str()),
        ("KLAXON_LISTEN", listen.as_str()),
        ("KLAXON_INCIDENT_RESPONSE_CHANNEL", support::ANNOUNCE),
    ]);
    let child = klaxon(&["serve", "--config", "deploy/klaxon.example.toml"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait (bounded) for the server to listen.
    let mut ready = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "klaxon serve did not start listening");
    let health = http(
        port,
        "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let body = "command=%2Fincident&text=declare+sev1+Database+is+down&user_id=UALICE&channel_id=CGENERAL01";
    let ts = chrono::Utc::now().timestamp();
    let request = format!(
        "POST /slack/commands HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sign(support::SECRET, ts, body.as_bytes()),
        body.len()
    );
    let response = http(port, request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("INC-1 declared"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id"),
        "{response}"
    );

    // The spawned worker is woken by the commit and delivers without being driven.
    slack.wait_for_calls("conversations.create", 1).await;
    let posts = slack.wait_for_calls("chat.postMessage", 2).await;
    assert!(posts.iter().any(|p| p["channel"] == support::ANNOUNCE));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&exit.stderr);
    assert!(exit.status.success(), "{logs}");
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(
        !logs.contains("xoxb-cli") && !logs.contains(support::SECRET),
        "secrets leaked into logs"
    );

    let out = klaxon(
        &["audit", "verify", "--config", "deploy/klaxon.example.toml"],
        &env,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("timeline intact: 3 entries verified"));

    // Issue 10: the report and an on-demand post-mortem from the CLI.
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", "deploy/klaxon.example.toml"]);
        klaxon(&all, &env).output().unwrap()
    };
    let out = run(&["report", "--since", "30d"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("(1):") && table.contains("ack p50"),
        "{table}"
    );
    let out = run(&["report", "--since", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since: `soon`"));
    let out = run(&["postmortem", "INC-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("# Post-mortem: INC-1"));
    let out = run(&["postmortem", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INC-99 does not exist"));
}

#[test]
fn commands_list_and_show_read_the_catalog() {
    let out = klaxon(
        &["commands", "list", "--config", "deploy/klaxon.example.toml"],
        SECRETS,
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 16, "{list}");
    let out = klaxon(
        &[
            "commands",
            "show",
            "k8s-scale",
            "--config",
            "deploy/klaxon.example.toml",
        ],
        SECRETS,
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("replicas"));
}

#[test]
fn a_broken_catalog_fails_check_and_serve_with_file_key_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k8s-scale.toml"),
        "name = \"k8s-scale\"\nsummary = \"x\"\naction = \"k8s-scale\"\nrisk = \"high\"\n[approvers]\nroles = [\"commander\"]\n\
         [params.namespace]\ntype = \"string\"\npattern = \"[a-z]+\"\n[params.deployment]\ntype = \"string\"\npattern = \"[a-z]+\"\n\
         [params.replicas]\ntype = \"integer\"\nmin = 5\nmax = 1\n",
    )
    .unwrap();
    let catalog = dir.path().to_str().unwrap().to_string();
    let mut env = SECRETS.to_vec();
    env.push(("KLAXON_CATALOG_DIR", catalog.as_str()));
    let out = klaxon(&["check", "--config", "deploy/klaxon.example.toml"], &env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("k8s-scale.toml") && stderr.contains("params.replicas.max"),
        "{stderr}"
    );
    env.push(("KLAXON_DATABASE_URL", "sqlite::memory:"));
    env.push(("KLAXON_LISTEN", "127.0.0.1:0"));
    let out = klaxon(&["serve", "--config", "deploy/klaxon.example.toml"], &env)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve must refuse a broken catalog");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the command catalog is broken"));
}

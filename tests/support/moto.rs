//! moto (PyPI `moto[server]`) as a stand-in for the AWS RDS API: one server per test on a
//! free loopback port, SDK clients configured for it with static test credentials, and a
//! recorder of the requests a client sends.
//!
//! The server binary is looked up in `$KLAXON_STANDIN_VENV/bin/moto_server`, then
//! `<repo>/.venv/bin/moto_server`, then `moto_server` on `PATH`. When none starts, the test
//! PANICS with the install command: a missing stand-in fails tests, it never skips them.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_rds::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_rds::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
};
use aws_sdk_rds::error::BoxError;

/// How long a server may take to answer after it is spawned.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// How to install the stand-ins, shown when none can be started.
const INSTALL_HINT: &str = "python3 -m venv .venv && .venv/bin/pip install -r tests/standins/requirements.txt \
     (run in the repository root, or set KLAXON_STANDIN_VENV to a venv that has moto[server])";

/// A running moto server, killed when dropped.
pub struct MotoServer {
    child: Child,
    url: String,
    log: PathBuf,
}

/// Starts a moto server on a free loopback port and waits (at most 30 s) until it accepts
/// connections. Panics with install instructions when no moto binary can be started.
pub async fn moto() -> MotoServer {
    let binary = find_binary();
    let port = free_port();
    let log = std::env::temp_dir().join(format!("klaxon-moto-{port}.log"));
    let child = spawn(&binary, port, &log);
    let mut server = MotoServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    server.wait_ready(port).await;
    server
}

impl MotoServer {
    /// The server's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SDK configuration for this server: region us-east-1, static dummy credentials
    /// (never the process environment), endpoint = this server.
    pub fn rds_config(&self) -> aws_sdk_rds::config::Builder {
        rds_config_for(&self.url)
    }

    /// A client for this server.
    pub fn rds_client(&self) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::from_conf(self.rds_config().build())
    }

    /// A client for this server that records every request it sends.
    pub fn recording_rds_client(&self) -> (aws_sdk_rds::Client, Recorder) {
        let recorder = Recorder::default();
        let config = self.rds_config().interceptor(recorder.clone()).build();
        (aws_sdk_rds::Client::from_conf(config), recorder)
    }

    async fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + STARTUP_LIMIT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited during startup ({status}); log {}:\n{}\nInstall: {INSTALL_HINT}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "moto_server did not answer on {} within {STARTUP_LIMIT:?}; log {}",
            self.url,
            self.log.display()
        );
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// SDK configuration for an RDS endpoint at `url`: region us-east-1 and static dummy
/// credentials (never the process environment).
pub fn rds_config_for(url: &str) -> aws_sdk_rds::config::Builder {
    aws_sdk_rds::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
}

/// The first moto binary that exists: venv from the environment, the repo's `.venv`, or
/// `moto_server` from `PATH` (checked by running `--help`).
fn find_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("KLAXON_STANDIN_VENV") {
        candidates.push(PathBuf::from(venv).join("bin/moto_server"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return found.clone();
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if on_path.is_ok_and(|s| s.success()) {
        return PathBuf::from("moto_server");
    }
    panic!(
        "moto_server not found (looked in {candidates:?} and on PATH). Install it: {INSTALL_HINT}"
    );
}

/// A port that was free a moment ago (the listener is dropped before moto binds it).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

fn spawn(binary: &PathBuf, port: u16, log: &PathBuf) -> Child {
    let out = File::create(log).expect("create moto log file");
    let err = out.try_clone().expect("clone moto log handle");
    Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "could not start {}: {e}. Install it: {INSTALL_HINT}",
                binary.display()
            )
        })
}

/// One recorded request: its decoded form fields, in order.
pub type Form = Vec<(String, String)>;

/// Records the form body of every request a client sends (RDS uses the AWS query
/// protocol: `Action=FailoverDBCluster&DBClusterIdentifier=...`).
#[derive(Clone, Debug, Default)]
pub struct Recorder(Arc<Mutex<Vec<Form>>>);

impl Recorder {
    /// Every request so far, as decoded form fields in order.
    pub fn requests(&self) -> Vec<Form> {
        self.0.lock().expect("recorder lock").clone()
    }

    /// The `Action` of every request so far.
    pub fn actions(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| field(r, "Action").map(str::to_owned))
            .collect()
    }

    /// The last request whose `Action` is `action`.
    pub fn last(&self, action: &str) -> Option<Form> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| field(r, "Action") == Some(action))
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.0.lock().expect("recorder lock").clear();
    }
}

/// The value of form field `name` in a recorded request.
pub fn field<'a>(request: &'a [(String, String)], name: &str) -> Option<&'a str> {
    request
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "klaxon-test-request-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let body = context.request().body().bytes().unwrap_or_default();
        let form: Form = serde_urlencoded::from_bytes(body)?;
        self.0.lock().expect("recorder lock").push(form);
        Ok(())
    }
}

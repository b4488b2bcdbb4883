//! aiosmtpd (PyPI) as a real SMTP server for the stakeholder email tests: plain SMTP on
//! a loopback port, every accepted message written as JSON (envelope, headers, text and
//! HTML parts as Python's email package parses them) by tests/standins/smtp_server.py.
//!
//! The server can be stopped and started again on the same port, so a test can show a
//! mail server that is down, then up. Python is looked up in `$KLAXON_STANDIN_VENV/bin`,
//! then `<repo>/.venv/bin`; when aiosmtpd cannot be started the test PANICS with the
//! install command: a missing stand-in fails tests, it never skips them.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const INSTALL_HINT: &str = "python3 -m venv .venv && .venv/bin/pip install -r tests/standins/requirements.txt \
     (or run scripts/test.sh, or set KLAXON_STANDIN_VENV to a venv with aiosmtpd)";

/// A local SMTP server; killed when dropped.
pub struct SmtpServer {
    /// Its port (stable across [`SmtpServer::stop`] / [`SmtpServer::start`]).
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn python() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(venv) = std::env::var_os("KLAXON_STANDIN_VENV") {
        candidates.push(PathBuf::from(venv).join("bin/python"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/klaxon-venv/bin/python"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no Python venv with aiosmtpd found. Install it: {INSTALL_HINT}"))
}

impl SmtpServer {
    /// A server on a free port that is NOT running yet (connections are refused):
    /// [`SmtpServer::start`] brings it up.
    pub fn reserved() -> SmtpServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().expect("temp dir").keep();
        SmtpServer {
            port,
            dir,
            child: None,
        }
    }

    /// A running server.
    pub fn running() -> SmtpServer {
        let mut server = SmtpServer::reserved();
        server.start();
        server
    }

    /// Starts the server (waits for it to say it is ready).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/standins/smtp_server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start aiosmtpd: {e}. Install it: {INSTALL_HINT}")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the server's first line");
        if line.trim() != "ready" {
            let status = child.wait();
            panic!("aiosmtpd did not start ({status:?}). Install it: {INSTALL_HINT}");
        }
        self.child = Some(child);
    }

    /// Stops the server: connections are refused until [`SmtpServer::start`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("read the message directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    /// Messages received for `address`.
    pub fn messages_to(&self, address: &str) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|a| a == address))
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

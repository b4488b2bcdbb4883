//! Stakeholder communication (issue 9) end to end on simulated time: groups by
//! severity threshold, the redacted external view and its preview, cadence reminders in
//! each group's zone, the all clear, the regulatory reminder of security incidents, and
//! a mail server or status page that is down (nothing lost, nothing sent twice).
//!
//! Email goes to a real SMTP server (aiosmtpd, tests/standins/smtp_server.py) and is
//! asserted as Python's email package parsed it; the status page is a stand-in that
//! refuses any request not shaped as Statuspage's API reference says. Every scenario runs
//! on SQLite and, when KLAXON_TEST_DATABASE_URL is set, on PostgreSQL.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use klaxon::config::{Config, StakeholdersConfig};
use klaxon::domain::incident::{EventKind, IncidentId};
use klaxon::domain::severity::Severity;
use klaxon::domain::stakeholders::{Audience, Group, StakeholderPolicy, UpdateFilter};
use klaxon::notify::{EmailSettings, SmtpTls, StatuspageSettings};
use serde_json::Value;
use support::smtp::SmtpServer;
use support::statuspage::{API_KEY, PAGE_ID, StatuspageStandIn};
use support::{Db, TestApp, start};

both_backends!(
    updates_reach_groups_by_threshold_and_external_groups_see_only_the_redacted_text,
    each_group_hears_on_its_cadence_in_its_own_zone_until_the_all_clear,
    security_incidents_are_reminded_until_someone_acknowledges,
    a_mail_server_down_then_up_loses_nothing_and_sends_each_message_once,
    a_status_page_down_then_up_gets_one_incident_and_each_update_once,
    a_preview_shows_the_external_text_and_sends_nothing,
    a_mailbox_the_server_refuses_fails_for_good_and_is_said,
);

const ENG_MAIL: &str = "incident-response@example.com";
const ENG_CHANNEL: &str = "CSTAKEENG1";
const CUSTOMER_MAIL: &str = "critical-customers@example.net";
const COMPONENT: &str = "cmpapi01";

fn minutes(m: i64) -> DateTime<Utc> {
    start() + TimeDelta::minutes(m)
}

fn configure(config: &mut Config, smtp_port: u16, statuspage_url: &str) {
    let engineering = Group {
        name: "engineering".into(),
        audience: Audience::Internal,
        threshold: Severity::Sev2,
        every: BTreeMap::from([
            (Severity::Sev1, TimeDelta::minutes(30)),
            (Severity::Sev2, TimeDelta::minutes(60)),
        ]),
        tz: chrono_tz::Europe::London,
        updates: UpdateFilter::All,
        slack_channels: vec![ENG_CHANNEL.into()],
        emails: vec![ENG_MAIL.into()],
        statuspage_component: None,
    };
    let customers = Group {
        name: "customers".into(),
        audience: Audience::External,
        threshold: Severity::Sev1,
        every: BTreeMap::from([(Severity::Sev1, TimeDelta::minutes(15))]),
        tz: chrono_tz::America::New_York,
        updates: UpdateFilter::Public,
        slack_channels: vec![],
        emails: vec![CUSTOMER_MAIL.into()],
        statuspage_component: Some(COMPONENT.into()),
    };
    config.stakeholders = StakeholdersConfig {
        policy: StakeholderPolicy {
            groups: vec![engineering, customers],
            security_keywords: vec!["breach".into()],
            ..StakeholderPolicy::default()
        },
        email: Some(EmailSettings {
            host: "127.0.0.1".into(),
            port: smtp_port,
            tls: SmtpTls::Plain,
            username: None,
            password: None,
            from: "Klaxon <klaxon@example.com>".parse().unwrap(),
            timeout: Duration::from_secs(5),
        }),
        statuspage: Some(StatuspageSettings {
            api_url: statuspage_url.into(),
            page_id: PAGE_ID.into(),
            api_key: API_KEY.to_string().into(),
            timeout: Duration::from_secs(5),
        }),
    };
}

struct Stake {
    app: TestApp,
    smtp: SmtpServer,
    page: StatuspageStandIn,
}

async fn stake(db: Db, smtp: SmtpServer) -> Stake {
    stake_with(db, smtp, |_| {}).await
}

/// [`stake`] with the stakeholder config adjusted by `adjust`.
async fn stake_with(db: Db, smtp: SmtpServer, adjust: impl FnOnce(&mut Config)) -> Stake {
    let page = StatuspageStandIn::start().await;
    let (port, url) = (smtp.port, page.api_url.clone());
    let app = TestApp::start_configured(db, move |config| {
        configure(config, port, &url);
        adjust(config);
    })
    .await;
    Stake { app, smtp, page }
}

impl Stake {
    /// `/incident <text>` by the commander at minute `m`, then one delivery pass.
    async fn at(&self, m: i64, channel: &str, text: &str) -> String {
        self.app.clock.set(minutes(m));
        let reply = self.app.command("UALICE", channel, text).await;
        self.app.deliver().await;
        reply
    }

    fn subjects(&self, to: &str) -> Vec<String> {
        self.smtp
            .messages_to(to)
            .iter()
            .map(|m| m["headers"]["subject"].as_str().unwrap().to_string())
            .collect()
    }
}

fn text(m: &Value) -> &str {
    m["text"].as_str().unwrap_or_default()
}

async fn notified(app: &TestApp, id: i64) -> Vec<(i64, String)> {
    app.store
        .timeline(IncidentId(id))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StakeholdersNotified { notice, groups } => Some((
                (e.at - start()).num_minutes(),
                format!("{notice:?} {}", groups.join(",")),
            )),
            _ => None,
        })
        .collect()
}

async fn updates_reach_groups_by_threshold_and_external_groups_see_only_the_redacted_text(db: Db) {
    let s = stake(db, SmtpServer::running()).await;
    let ch = s.app.declare("UALICE", "sev1 Checkout is down").await;
    // The declaration: internal groups only (external ones hear of it when an update is
    // made public, after its preview).
    assert_eq!(
        s.subjects(ENG_MAIL),
        ["[SEV1] INC-1 declared: Checkout is down"]
    );
    assert_eq!(s.app.messages_in(ENG_CHANNEL).len(), 1);
    assert!(s.smtp.messages_to(CUSTOMER_MAIL).is_empty());

    let internal = "<@UCAROL> failed over `pg-2`, see #inc-20261123-checkout-is-down";
    s.at(20, &ch, &format!("update {internal}")).await;
    let eng = s.smtp.messages_to(ENG_MAIL);
    assert_eq!(eng.len(), 2);
    assert!(
        text(&eng[1]).contains(internal),
        "internal groups see the text as written"
    );
    assert!(
        s.smtp.messages_to(CUSTOMER_MAIL).is_empty(),
        "a plain update stays internal"
    );
    assert!(s.page.incidents().is_empty());

    let reply = s
        .at(25, &ch, "update --public <@UCAROL> restarted `checkout-api` in <#C0999|inc-20261123-checkout-is-down>; errors are falling")
        .await;
    let external =
        "our team restarted [details withheld] in an internal channel; errors are falling";
    assert!(reply.contains(external), "{reply}");
    // The preview is in the channel before anything external goes out.
    let preview = s.app.messages_in(&ch);
    assert!(
        preview
            .iter()
            .any(|p| p.contains("Stakeholder preview") && p.contains(external)),
        "{preview:?}"
    );
    assert!(s.smtp.messages_to(CUSTOMER_MAIL).is_empty());
    assert!(s.page.incidents().is_empty());
    s.app.clock.set(minutes(27));
    s.app.deliver().await;

    let mail = s.smtp.messages_to(CUSTOMER_MAIL);
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    let h = &m["headers"];
    assert_eq!(h["from"], "Klaxon <klaxon@example.com>");
    assert_eq!(h["to"], CUSTOMER_MAIL);
    assert_eq!(h["subject"], "[SEV1] INC-1 update: Checkout is down");
    assert!(
        h["message-id"]
            .as_str()
            .unwrap()
            .starts_with("<klaxon.1.customers.update-"),
        "{h}"
    );
    assert!(
        h["date"].as_str().unwrap().contains("23 Nov 2026 10:27:00"),
        "{h}"
    );
    assert_eq!(m["content_type"], "multipart/alternative");
    let body = text(m);
    assert!(body.contains(external), "{body}");
    // New York: 10:25 UTC is 05:25 EST; the group's cadence is 15 minutes.
    assert!(
        body.contains("Written: Mon 23 Nov 2026 05:25 EST"),
        "{body}"
    );
    assert!(body.contains("Next update by: 05:40 EST"), "{body}");
    let html = m["html"].as_str().unwrap();
    assert!(
        html.contains("<b>Next update by:</b> 05:40 EST") && html.contains(external),
        "{html}"
    );
    let raw = m["raw"].as_str().unwrap();
    for secret in ["UCAROL", "checkout-api", "inc-20261123", "C0999", "pg-2"] {
        assert!(
            !raw.contains(secret),
            "{secret} leaked to an external group:\n{raw}"
        );
    }
    // Engineering (updates = all) got the public update as written, at once.
    assert_eq!(s.smtp.messages_to(ENG_MAIL).len(), 3);

    let incidents = s.page.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["name"], "Checkout is down (ref INC-1)");
    assert_eq!(incidents[0]["status"], "investigating");
    assert_eq!(incidents[0]["incident_updates"][0]["body"], external);
    assert_eq!(s.page.component(COMPONENT).as_deref(), Some("major_outage"));
    assert!(s.page.refused().is_empty(), "{:?}", s.page.refused());
    assert_eq!(
        notified(&s.app, 1).await,
        [
            (0, "Declared engineering".to_string()),
            (20, "Update engineering".to_string()),
            (25, "Update engineering,customers".to_string()),
        ]
    );
}

async fn each_group_hears_on_its_cadence_in_its_own_zone_until_the_all_clear(db: Db) {
    let s = stake(db, SmtpServer::running()).await;
    let ch = s.app.declare("UALICE", "sev1 Checkout is down").await;
    s.app.run_until(minutes(31)).await;
    let eng = s.smtp.messages_to(ENG_MAIL);
    assert_eq!(eng.len(), 2);
    assert!(
        text(&eng[1]).contains("Still investigating, next update by 11:00 GMT."),
        "{}",
        text(&eng[1])
    );
    let slack = s.app.messages_in(ENG_CHANNEL);
    assert!(
        slack[1].contains("Still investigating, next update by 11:00 GMT"),
        "{slack:?}"
    );
    assert!(
        s.smtp.messages_to(CUSTOMER_MAIL).is_empty(),
        "never told: no cadence"
    );

    // A public update at minute 40 reaches both groups and restarts both cadences.
    s.at(
        40,
        &ch,
        "update --public Payments are failing for some customers",
    )
    .await;
    s.app.run_until(minutes(56)).await;
    let customers = s.smtp.messages_to(CUSTOMER_MAIL);
    assert_eq!(
        customers.len(),
        2,
        "the update at 42, \"still investigating\" at 55"
    );
    // 10:55 UTC is 05:55 EST; next in 15 minutes.
    assert!(
        text(&customers[1]).contains("Still investigating, next update by 06:10 EST."),
        "{}",
        text(&customers[1])
    );
    assert_eq!(
        s.smtp.messages_to(ENG_MAIL).len(),
        3,
        "eng's cadence restarted at 40"
    );
    let updates = s.page.incidents()[0]["incident_updates"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(updates, 2);
    // Repeats: both cadences come due again at 70.
    s.app.run_until(minutes(71)).await;
    assert_eq!(s.smtp.messages_to(CUSTOMER_MAIL).len(), 3);
    let eng = s.smtp.messages_to(ENG_MAIL);
    assert_eq!(eng.len(), 4);
    assert!(
        text(&eng[3]).contains("next update by 11:40 GMT"),
        "{}",
        text(&eng[3])
    );
    let updates = s.page.incidents()[0]["incident_updates"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(updates, 3);

    let reply = s.at(75, &ch, "resolve Rolled back `deploy-42`").await;
    // The customers' all clear is previewed like an update, and waits for it.
    let shown = "> All clear: the incident is resolved. Rolled back [details withheld]";
    assert!(reply.contains(shown), "{reply}");
    assert!(
        s.app
            .messages_in(&ch)
            .iter()
            .any(|m| m.contains("Stakeholder preview") && m.contains("All clear"))
    );
    assert_eq!(s.smtp.messages_to(CUSTOMER_MAIL).len(), 3);
    assert_eq!(s.page.incidents()[0]["status"], "investigating");
    s.app.clock.set(minutes(77));
    s.app.deliver().await;
    let customers = s.smtp.messages_to(CUSTOMER_MAIL);
    let all_clear = customers.last().unwrap();
    assert_eq!(
        all_clear["headers"]["subject"],
        "[Resolved] INC-1: Checkout is down"
    );
    assert!(text(all_clear).contains("All clear"), "{}", text(all_clear));
    assert!(!text(all_clear).contains("Next update by"));
    let eng = s.smtp.messages_to(ENG_MAIL);
    assert!(
        text(eng.last().unwrap())
            .contains("All clear: the incident is resolved. Rolled back `deploy-42`")
    );
    assert!(!all_clear["raw"].as_str().unwrap().contains("deploy-42"));
    let incident = &s.page.incidents()[0];
    assert_eq!(incident["status"], "resolved");
    assert_eq!(s.page.component(COMPONENT).as_deref(), Some("operational"));

    // Resolved: no more cadence, for anyone.
    let (eng_n, cust_n) = (eng.len(), customers.len());
    s.app.run_until(minutes(300)).await;
    assert_eq!(s.smtp.messages_to(ENG_MAIL).len(), eng_n);
    assert_eq!(s.smtp.messages_to(CUSTOMER_MAIL).len(), cust_n);
    assert!(s.page.refused().is_empty(), "{:?}", s.page.refused());
    let mut told = notified(&s.app, 1).await;
    told.sort();
    assert_eq!(
        told,
        [
            (0, "Declared engineering".to_string()),
            (30, "StillInvestigating engineering".to_string()),
            (40, "Update engineering,customers".to_string()),
            (55, "StillInvestigating customers".to_string()),
            (70, "StillInvestigating customers".to_string()),
            (70, "StillInvestigating engineering".to_string()),
            (75, "AllClear engineering,customers".to_string()),
        ]
    );
}

async fn security_incidents_are_reminded_until_someone_acknowledges(db: Db) {
    let s = stake(db, SmtpServer::running()).await;
    let ch = s
        .app
        .declare("UALICE", "--security sev2 Leaked API credentials")
        .await;
    s.app.run_until(minutes(121)).await;
    let reminders = |app: &TestApp, ch: &str| {
        app.messages_in(ch)
            .into_iter()
            .filter(|m| m.contains("regulatory notification"))
            .count()
    };
    assert_eq!(reminders(&s.app, &ch), 3, "at 0, 60 and 120 minutes");
    let announced = s.app.messages_in(support::ANNOUNCE);
    assert!(
        announced
            .iter()
            .any(|m| m.contains("notify compliance/legal by")),
        "{announced:?}"
    );

    let refused = s.at(125, &ch, "resolve Rotated the keys").await;
    assert!(refused.contains("ack-regulatory"), "{refused}");
    let ack = s.at(126, &ch, "ack-regulatory").await;
    assert!(ack.contains("acknowledged"), "{ack}");
    s.app.run_until(minutes(400)).await;
    assert_eq!(reminders(&s.app, &ch), 3, "acknowledged: no more reminders");
    let resolved = s.at(401, &ch, "resolve Rotated the keys").await;
    assert!(resolved.contains("resolved"), "{resolved}");

    // Flagged later, in the channel.
    let later = s
        .app
        .declare("UALICE", "sev2 Odd logins on the admin panel")
        .await;
    let flagged = s.at(402, &later, "security").await;
    assert!(flagged.contains("is now a security incident"), "{flagged}");
    s.app.run_until(minutes(403)).await;
    assert_eq!(reminders(&s.app, &later), 1);
    let again = s.at(404, &later, "security").await;
    assert!(again.contains("already a security incident"), "{again}");

    // A config rule: a title with a security keyword.
    s.app
        .declare("UALICE", "sev3 Possible data breach in exports")
        .await;
    let flagged = s
        .app
        .store
        .timeline(IncidentId(3))
        .await
        .unwrap()
        .into_iter()
        .any(|e| e.kind == EventKind::SecurityFlagged { by_rule: true });
    assert!(flagged);
}

async fn a_mail_server_down_then_up_loses_nothing_and_sends_each_message_once(db: Db) {
    let mut s = stake(db, SmtpServer::reserved()).await;
    s.app.declare("UALICE", "sev2 Search is slow").await;
    // Down for longer than the outbox's attempt limit for other rows: never failed.
    for i in 1..=35 {
        s.app.clock.set(minutes(i * 5) + TimeDelta::seconds(1));
        let report = s.app.deliver().await;
        assert_eq!(report.failed, 0, "pass {i}: {report:?}");
    }
    assert!(s.smtp.messages().is_empty());
    s.smtp.start();
    s.app.clock.set(minutes(200));
    s.app.deliver().await;
    s.app.clock.set(minutes(210));
    s.app.deliver().await;
    let mail = s.smtp.messages_to(ENG_MAIL);
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(
        mail[0]["headers"]["subject"],
        "[SEV2] INC-1 declared: Search is slow"
    );
    // The Slack half of the group was never held back by the mail server.
    assert_eq!(s.app.messages_in(ENG_CHANNEL).len(), 1);
}

async fn a_status_page_down_then_up_gets_one_incident_and_each_update_once(db: Db) {
    let s = stake(db, SmtpServer::running()).await;
    let ch = s.app.declare("UALICE", "sev1 Checkout is down").await;
    s.page.set_down(true);
    s.at(1, &ch, "update --public Checkout fails for some customers")
        .await;
    s.app.clock.set(minutes(4));
    assert_eq!(s.app.deliver().await.failed, 0);
    assert!(s.page.incidents().is_empty());
    // Up, but the create's answer is lost: the retry finds the incident it made.
    s.page.set_down(false);
    s.page.lose_next_answers(1);
    s.app.clock.set(minutes(10));
    s.app.deliver().await;
    s.app.clock.set(minutes(16));
    s.app.deliver().await;
    let incidents = s.page.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(
        incidents[0]["incident_updates"].as_array().unwrap().len(),
        1
    );
    // An update whose answer is lost is not applied twice.
    s.page.lose_next_answers(1);
    s.at(17, &ch, "update --public A fix is rolling out").await;
    for m in [20, 26, 32] {
        s.app.clock.set(minutes(m));
        s.app.deliver().await;
    }
    let updates: Vec<String> = s.page.incidents()[0]["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        updates
            .iter()
            .filter(|b| *b == "A fix is rolling out")
            .count(),
        1,
        "{updates:?}"
    );
    assert!(s.page.refused().is_empty(), "{:?}", s.page.refused());
    // Email to the same group went out once per update meanwhile.
    assert_eq!(s.smtp.messages_to(CUSTOMER_MAIL).len(), 2);
}

async fn a_preview_shows_the_external_text_and_sends_nothing(db: Db) {
    let s = stake(db, SmtpServer::running()).await;
    let ch = s.app.declare("UALICE", "sev1 Checkout is down").await;
    let before = (s.smtp.messages().len(), s.app.messages_in(&ch).len());
    let reply = s
        .at(5, &ch, "update --preview <@UCAROL> is restarting `api-7`")
        .await;
    assert!(
        reply.starts_with("Preview only, nothing was posted."),
        "{reply}"
    );
    assert!(
        reply.contains("> our team is restarting [details withheld]"),
        "{reply}"
    );
    assert!(reply.contains("Internal groups (engineering)"), "{reply}");
    s.app.clock.set(minutes(10));
    s.app.deliver().await;
    assert_eq!(
        (s.smtp.messages().len(), s.app.messages_in(&ch).len()),
        before
    );
    assert!(s.page.incidents().is_empty());
    let updates = s
        .app
        .store
        .timeline(IncidentId(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::UpdatePosted { .. }))
        .count();
    assert_eq!(updates, 0);
}

/// A mailbox the server refuses (SMTP 550) is not retried forever: the row fails, is
/// kept, and said in #incident-response; the lane goes on with the next recipient.
async fn a_mailbox_the_server_refuses_fails_for_good_and_is_said(db: Db) {
    let s = stake_with(db, SmtpServer::running(), |config| {
        config.stakeholders.policy.groups[0].emails =
            vec!["refused@example.com".into(), ENG_MAIL.into()];
    })
    .await;
    s.app.declare("UALICE", "sev2 Search is slow").await;
    s.app.deliver().await;
    assert_eq!(s.smtp.messages_to(ENG_MAIL).len(), 1);
    assert!(s.smtp.messages_to("refused@example.com").is_empty());
    let said = s.app.messages_in(support::ANNOUNCE);
    assert!(
        said.iter()
            .any(|m| m.contains("a stakeholder notice for INC-1") && m.contains("550")),
        "{said:?}"
    );
}

/// `klaxon check` validates `[stakeholders]` and names the key and the rule.
#[test]
fn check_names_a_broken_stakeholder_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[slack]\nincident_response_channel = \"C0123456789\"\n\
         [stakeholders.groups.customers]\naudience = \"external\"\nthreshold = \"sev1\"\n\
         timezone = \"America/New_York\"\nemails = [\"ops@example.com\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env_clear()
        .env("SLACK_SIGNING_SECRET", support::SECRET)
        .env("SLACK_BOT_TOKEN", "xoxb-cli")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "config key `stakeholders.groups.customers.emails`: needs [stakeholders.email]"
        ),
        "{stderr}"
    );
}

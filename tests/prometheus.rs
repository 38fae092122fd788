//! isogate scraped by a real Prometheus server (Debian's `prometheus`): it loads
//! `deploy/prometheus/rules.yml`, scrapes the admin listener every second, and its query
//! API then sees isogate's request counter with the expected labels and values, the
//! alert rules evaluate without error, and a failed reload drives the reload alert.
//!
//! The `prometheus` binary comes from the Debian package `prometheus` (installed by
//! `scripts/dev test`); the test fails, it does not skip, when it is missing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::jws::{claims, token};
use common::*;
use serde_json::Value;

// === impl Prometheus ===

/// A Prometheus server on loopback with its own storage; stopped when dropped.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _scratch: Scratch,
}

impl Prometheus {
    /// Scrapes `target` every second as job `isogate`, with the repository's alert rules.
    fn start(target: SocketAddr) -> Self {
        let binary = on_path("prometheus").unwrap_or_else(|| {
            panic!(
                "the `prometheus` server is not installed: it comes from the Debian package \
                 `prometheus` (`apt-get install -y prometheus`), which `scripts/dev test` installs"
            )
        });
        let scratch = Scratch::new("prometheus");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml");
        let config = scratch.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: isogate\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let log = scratch.0.join("prometheus.log");
        for _ in 0..4 {
            let addr = free_addr();
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", scratch.0.join("data").display()))
                .arg(format!("--web.listen-address={addr}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let exited = eventually("Prometheus ready", || {
                if child.try_wait().unwrap().is_some() {
                    return Some(true);
                }
                let ready = common::client::get(addr, "prometheus", "/-/ready", &[]).ok()?;
                (ready.status == 200).then_some(false)
            });
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            match exited {
                false => return Self { addr, child, log, _scratch: scratch },
                true if text.contains("address already in use") => continue,
                true => panic!("prometheus exited during start-up:\n{text}"),
            }
        }
        panic!("no free port for Prometheus after 4 attempts");
    }

    /// `data` of a successful answer from the HTTP API at `path_and_query`.
    fn api(&self, path_and_query: &str) -> Value {
        // HTTP/1.0, so the longer answers come whole, up to the close, rather than chunked.
        let raw = format!("GET {path_and_query} HTTP/1.0\r\nhost: prometheus\r\n\r\n");
        let r = common::client::send(self.addr, raw.as_bytes()).unwrap();
        let body = r.json();
        assert_eq!((r.status, &body["status"]), (200, &Value::from("success")), "{path_and_query}: {body}");
        body["data"].clone()
    }

    /// The value of the single sample `query` returns now, if there is one.
    fn value(&self, query: &str) -> Option<f64> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(query)));
        let result = data["result"].as_array()?;
        match result.as_slice() {
            [sample] => sample["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until `query` returns exactly `expected`.
    fn wait_for(&self, query: &str, expected: f64) {
        let start = Instant::now();
        loop {
            let got = self.value(query);
            if got == Some(expected) {
                return;
            }
            if start.elapsed() > DEADLINE {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("`{query}` is {got:?}, not {expected}; Prometheus log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rules of `/api/v1/rules`, over every group.
    fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules");
        data["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SIGTERM: Prometheus shuts down cleanly (closing its storage) within a second.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The alert names in `rules.yml`.
fn alerts_in_rules_file() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules.yml")).unwrap();
    text.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_owned()).collect()
}

#[test]
fn prometheus_scrapes_the_request_counter_and_evaluates_the_alert_rules() {
    let ups = Upstreams::start(&["prod-shared"]);
    let config = format!(
        r#"
{PREAMBLE}{RSA_ISSUER}
{prod_api}"#,
        prod_api = prod_api(ups.get("prod-shared").addr)
    );
    let gw = Gateway::start(&config, &[]);
    let prometheus = Prometheus::start(gw.admin);

    let prod = token("RS256", claims("prod", "acme"));
    for _ in 0..3 {
        assert_eq!(gw.get_with_token("prod.test", "/api/orders", &prod).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(gw.get("prod.test", "/api/orders", &[]).status, 401);
    }
    gw.metrics(); // every request is recorded before Prometheus is asked

    prometheus.wait_for(r#"up{job="isogate"}"#, 1.0);
    prometheus.wait_for(
        r#"isogate_requests_total{job="isogate",environment="prod",route="api",decision="allow",status_class="2xx",account="regular"}"#,
        3.0,
    );
    prometheus.wait_for(r#"sum(isogate_requests_total{job="isogate",status_class="4xx"})"#, 2.0);
    prometheus.wait_for(r#"isogate_auth_failures_total{job="isogate",reason="token_missing"}"#, 2.0);

    // Every alert of rules.yml is loaded and has been evaluated without error.
    let expected = alerts_in_rules_file();
    assert!(expected.len() >= 10, "{expected:?}");
    let rules = eventually("every rule evaluated", || {
        let rules = prometheus.rules();
        rules.iter().all(|r| r["health"] != "unknown").then_some(rules)
    });
    let loaded: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(loaded, expected.iter().map(String::as_str).collect::<Vec<_>>());
    for rule in &rules {
        let error = rule["lastError"].as_str().unwrap_or_default();
        assert_eq!((rule["health"].as_str(), error), (Some("ok"), ""), "{rule}");
    }
    let firing: Vec<&Value> = rules.iter().filter(|r| r["state"] != "inactive").collect();
    assert!(firing.is_empty(), "a healthy gateway raises no alert: {firing:?}");

    // A reload of a broken file: the reload alert's expression holds (pending for its `for`).
    std::fs::write(&gw.config_path, "[environments.prod\nbroken = ").unwrap();
    gw.signal("HUP");
    eventually("IsogateConfigReloadFailed pending", || {
        let alerts = prometheus.api("/api/v1/alerts");
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "IsogateConfigReloadFailed" && a["state"] == "pending")
            .then_some(())
    });
    gw.write_config(&config);
}

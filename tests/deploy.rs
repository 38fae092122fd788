//! The deployment files under `deploy/`, checked with the tools that consume them:
//! the Prometheus alert rules pass their `promtool` unit tests, the live `/metrics`
//! output of the real gateway passes `promtool check metrics`, the Prometheus config and
//! the Grafana dashboard are well formed, every metric and label they name is one
//! isogate exports, and the Kubernetes configuration passes `isogate check`.
//!
//! `promtool` comes from the Debian package `prometheus`; these tests fail (they do not
//! skip) when it is missing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::jws::{claims, token};
use common::*;

/// Labels Prometheus itself adds or uses, besides those isogate exports.
const PROMETHEUS_LABELS: &[&str] = &["le", "job", "instance", "namespace", "pod", "__name__"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// `promtool` on `PATH`, or a failure that says how to get it.
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "promtool is not installed, so the Prometheus files under deploy/ cannot be checked. \
             It comes from the Debian package `prometheus` (`apt-get install -y prometheus`), \
             which `scripts/dev test` installs."
        )
    })
}

fn output_text(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `promtool ARGS` in the repository root and asserts it succeeds.
fn promtool_ok(args: &[&str]) -> Output {
    let out = Command::new(promtool()).args(args).current_dir(repo()).output().unwrap();
    assert!(out.status.success(), "`promtool {}` failed:\n{}", args.join(" "), output_text(&out));
    out
}

// --- What isogate exports, read from src/metrics.rs --------------------------------------

/// The string literals of `src` outside comments, up to its `#[cfg(test)]` module.
fn string_literals(src: &str) -> Vec<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal ('"' would otherwise open a string); lifetimes have no
                // closing quote within two characters and are left alone.
                let mut ahead = chars.clone();
                let first = ahead.next();
                let lit = if first == Some('\\') { ahead.nth(1) } else { ahead.next() };
                if lit == Some('\'') {
                    let skip = if first == Some('\\') { 3 } else { 2 };
                    for _ in 0..skip {
                        chars.next();
                    }
                }
            }
            '"' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                s.push(e);
                            }
                        }
                        '"' => break,
                        c => s.push(c),
                    }
                }
                out.push(s);
            }
            _ => {}
        }
    }
    out
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Every metric name registered in src/metrics.rs.
fn exported_metrics() -> BTreeSet<String> {
    let names: BTreeSet<String> = string_literals(&read("src/metrics.rs"))
        .into_iter()
        .filter(|s| s.starts_with("isogate_") && is_identifier(s))
        .collect();
    assert!(names.len() >= 15, "found only {names:?} in src/metrics.rs: has its layout changed?");
    names
}

/// Every label name isogate may export: the identifier-like literals of src/metrics.rs
/// (label names, among other values), plus the labels Prometheus adds.
fn known_labels() -> BTreeSet<String> {
    string_literals(&read("src/metrics.rs"))
        .into_iter()
        .filter(|s| is_identifier(s) && !s.starts_with("isogate_"))
        .chain(PROMETHEUS_LABELS.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// The `isogate_*` names mentioned anywhere in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("isogate_").map(|i| i + from) {
        let boundary = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |i| i + at);
        if boundary && end > at + "isogate_".len() {
            names.insert(text[at..end].to_owned());
        }
        from = end.max(at + 1);
    }
    names
}

/// The names in `used` that isogate does not export. Histogram series (`_bucket`, `_sum`,
/// `_count`) count as their base name.
fn unknown_metrics(used: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            !exported.contains(name.as_str()) && !exported.contains(base)
        })
        .cloned()
        .collect()
}

/// Label names used by the PromQL `expr`: in selectors (`name="v"`, `=~`, `!=`, `!~`)
/// and in `by (...)` / `without (...)` / `on (...)` / `ignoring (...)` clauses.
fn labels_in_promql(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    // Selectors: the text between braces that holds a quoted value.
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else { break };
        let inside = &rest[open + 1..open + len];
        rest = &rest[open + len..];
        if !inside.contains('"') {
            continue;
        }
        let mut in_quotes = false;
        let mut part = String::new();
        for c in inside.chars().chain(std::iter::once(',')) {
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    part.push(c);
                }
                ',' if !in_quotes => {
                    let name = part.trim().split(['=', '!', '~']).next().unwrap_or_default().trim().to_owned();
                    if !name.is_empty() {
                        labels.insert(name);
                    }
                    part.clear();
                }
                c => part.push(c),
            }
        }
    }
    // Grouping and matching clauses.
    for keyword in ["by", "without", "on", "ignoring"] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(keyword).map(|i| i + from) {
            from = at + keyword.len();
            let before_ok =
                at == 0 || !(expr.as_bytes()[at - 1].is_ascii_alphanumeric() || expr.as_bytes()[at - 1] == b'_');
            let after = expr[from..].trim_start();
            if !before_ok || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').unwrap_or(after.len())];
            labels.extend(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }
    labels
}

// --- Reading the deploy files -------------------------------------------------------------

/// The `expr` of every rule in a Prometheus rule file (block scalars and one-liners).
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let indent = line.len() - line.trim_start().len();
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n"));
        } else {
            exprs.push(value.to_owned());
        }
    }
    exprs
}

/// The alert names of a rule file.
fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|l| l.trim_start().strip_prefix("- alert:")).map(|n| n.trim().to_owned()).collect()
}

/// For each alert in a promtool test file: (has a case where it fires, has one where it
/// does not).
fn alert_cases(tests: &str) -> BTreeMap<String, (bool, bool)> {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:") {
            let Some(name) = current.take() else { continue };
            let entry = cases.entry(name).or_default();
            let expected = expected.split('#').next().unwrap_or_default().trim();
            if expected == "[]" {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    cases
}

/// The `input_series` of a promtool test file: (metric name, label names).
fn input_series(tests: &str) -> Vec<(String, BTreeSet<String>)> {
    tests
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- series:"))
        .map(|s| {
            let s = s.trim().trim_matches('\'');
            let (name, labels) = s.split_once('{').unwrap_or((s, "}"));
            (name.to_owned(), labels_in_promql(&format!("{{{labels}")))
        })
        .collect()
}

/// Label-name sets of every sample in a Prometheus text exposition, by metric name.
fn exposition_label_sets(text: &str) -> BTreeMap<String, BTreeSet<BTreeSet<String>>> {
    let mut sets: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = if line[name_end..].starts_with('{') {
            labels_in_promql(&line[name_end..=line.rfind('}').unwrap()])
        } else {
            BTreeSet::new()
        };
        sets.entry(line[..name_end].to_owned()).or_default().insert(labels);
    }
    sets
}

/// The value lines of a block scalar `key: |` in a YAML file, without their indentation.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}: |` block"));
    let key_indent = header.len() - header.trim_start().len();
    let body: Vec<&str> =
        lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent).collect();
    let indent = body.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap();
    body.iter().map(|l| l.get(indent..).unwrap_or_default()).collect::<Vec<_>>().join("\n") + "\n"
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/isogate-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/isogate-dashboard.json is not valid JSON: {e}"))
}

/// Every (panel id, refId, expr) of the dashboard.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["id"].as_u64().unwrap(),
                target["refId"].as_str().unwrap().to_owned(),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

// --- Tests --------------------------------------------------------------------------------

#[test]
fn prometheus_rules_pass_their_unit_tests() {
    let check = promtool_ok(&["check", "rules", "deploy/prometheus/rules.yml"]);
    println!("{}", output_text(&check));
    let test = promtool_ok(&["test", "rules", "deploy/prometheus/tests.yml"]);
    println!("{}", output_text(&test));

    // Every alert is tested both firing and not firing, and is complete.
    let rules = read("deploy/prometheus/rules.yml");
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 7, "expected the documented alerts, found {alerts:?}");
    let cases = alert_cases(&read("deploy/prometheus/tests.yml"));
    for alert in &alerts {
        let (fires, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires, "tests.yml has no case where {alert} fires");
        assert!(quiet, "tests.yml has no case where {alert} stays quiet (`exp_alerts: []`)");
    }
    for block in rules.split("- alert:").skip(1) {
        let name = block.lines().next().unwrap_or_default().trim();
        for key in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(block.contains(key), "alert {name} has no `{key}`");
        }
    }
}

#[test]
fn live_metrics_pass_promtool_check_metrics() {
    let promtool = promtool();
    let ups = standard_upstreams();
    let dev = free_addr();
    // The standard gateway plus a report-only environment with a plan and the tenant
    // label, so the policy, access-reason, rate-limit and tenant families have samples to
    // lint too.
    let extra = r#"
[metrics]
tenant_label_top = 5

[plans.metered]
rate_per_second = 1000
burst = 1000

[environments.limited]
hosts = ["limited.test"]
default_pool = "prod-shared"
default_plan = "metered"
allowed_roles = ["nobody"]
enforcement = "report_only"
"#;
    let gw = Gateway::start(&standard_config(&ups, extra), &[("@DEV@", dev)]);

    let prod = token("RS256", claims("prod", "acme"));
    assert_eq!(gw.get_with_token("prod.test", "/api", &prod).status, 200, "allowed");
    assert_eq!(gw.get_with_token("prod.test", "/api", &prod).status, 200, "allowed, from the token cache");
    let stage = token("RS256", claims("stage", "acme"));
    assert_eq!(gw.get_with_token("prod.test", "/api", &stage).status, 403, "wrong environment");
    assert_eq!(gw.get("prod.test", "/api", &[]).status, 401, "no token");
    let limited = format!("Bearer {}", token("HS256", claims("limited", "acme")));
    let r = gw.get(
        "limited.test",
        "/api",
        &[("authorization", limited.as_str()), ("x-access-reason", "checking the deploy files")],
    );
    assert_eq!(r.status, 200, "report-only serves what it would refuse");
    gw.signal("HUP");
    let text = eventually("a counted reload", || {
        let text = gw.metrics();
        text.contains(r#"isogate_config_reloads_total{result="ok"}"#).then_some(text)
    });

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = output_text(&out);
    println!("promtool check metrics:\n{report}");
    assert!(out.status.success(), "promtool check metrics found problems in /metrics:\n{report}\n\n{text}");

    // The families the alerts and the dashboard rely on were all there to be linted.
    let live = exposition_label_sets(&text);
    for family in [
        "isogate_requests_total",
        "isogate_rejections_total",
        "isogate_auth_failures_total",
        "isogate_policy_report_only_total",
        "isogate_access_reasons_total",
        "isogate_rate_limit_decisions_total",
        "isogate_config_reloads_total",
        "isogate_token_cache_requests_total",
        "isogate_audit_lines_lost_total",
        "isogate_request_duration_seconds_bucket",
        "isogate_upstream_duration_seconds_bucket",
        "isogate_upstream_healthy",
        "isogate_tenant_requests_total",
        "isogate_connections_open",
        "isogate_connections_refused_total",
        "isogate_config_last_reload_successful",
    ] {
        assert!(live.contains_key(family), "{family} is missing from /metrics:\n{text}");
    }
    // Every name the gateway exports is declared in src/metrics.rs, the file the other
    // checks read.
    let exported = exported_metrics();
    let undeclared = unknown_metrics(&live.keys().cloned().collect(), &exported);
    assert!(undeclared.is_empty(), "/metrics has names src/metrics.rs does not declare: {undeclared:?}");

    // The rule tests' input series carry the label sets isogate really exports (plus the
    // job and instance labels a scrape adds).
    let mut compared = BTreeSet::new();
    for (name, mut labels) in input_series(&read("deploy/prometheus/tests.yml")) {
        labels.remove("job");
        labels.remove("instance");
        if let Some(sets) = live.get(&name) {
            assert!(
                sets.contains(&labels),
                "tests.yml feeds {name} with labels {labels:?}; isogate exports it with {sets:?}"
            );
            compared.insert(name);
        }
    }
    assert!(compared.len() >= 5, "too few input series could be compared with /metrics: {compared:?}");
}

#[test]
fn deploy_files_are_well_formed() {
    let check = promtool_ok(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    println!("{}", output_text(&check));

    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion: {}", dash["schemaVersion"]);
    assert!(!dash["title"].as_str().unwrap().is_empty());
    let variables = dash["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "the dashboard needs a Prometheus datasource variable"
    );
    let panels = dash["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels.iter().filter(|p| p["type"] == "row").map(|p| p["title"].as_str().unwrap()).collect();
    assert!(rows.len() >= 3, "rows: {rows:?}");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("panel without an id: {panel}"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "panel {id} has no gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id} must use the datasource variable");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {id} has no targets"));
        assert!(!targets.is_empty(), "panel {id} has no targets");
        for t in targets {
            assert!(!t["expr"].as_str().unwrap_or_default().trim().is_empty(), "panel {id} has an empty expr");
        }
    }

    // The dashboard's PromQL parses: promtool checks it as recording rules, with the
    // template variables filled in.
    let exprs = dashboard_exprs(&dash);
    let mut recording = String::from("groups:\n  - name: isogate-dashboard\n    rules:\n");
    for (id, ref_id, expr) in &exprs {
        let expr = expr.replace("$__rate_interval", "5m").replace("$job", ".+").replace("$environment", ".+");
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&expr).unwrap();
        recording.push_str(&format!("      - record: dashboard:panel_{id}_{ref_id}\n        expr: {quoted}\n"));
    }
    let scratch = Scratch::new("deploy-dashboard");
    let rules_path = scratch.0.join("dashboard-rules.yml");
    std::fs::write(&rules_path, &recording).unwrap();
    promtool_ok(&["check", "rules", rules_path.to_str().unwrap()]);

    // Every metric and label named by the dashboard, the alert rules and their tests
    // is one isogate exports: a typo would leave a panel empty or an alert silent.
    let exported = exported_metrics();
    let labels = known_labels();
    let rules = read("deploy/prometheus/rules.yml");
    let sources = [
        ("deploy/grafana/isogate-dashboard.json", read("deploy/grafana/isogate-dashboard.json")),
        ("deploy/prometheus/rules.yml", rules.clone()),
        ("deploy/prometheus/tests.yml", read("deploy/prometheus/tests.yml")),
        ("deploy/README.md", read("deploy/README.md")),
    ];
    for (file, text) in &sources {
        let used = metric_names_in(text);
        assert!(!used.is_empty() || file.ends_with(".md"), "{file} names no isogate metric");
        let unknown = unknown_metrics(&used, &exported);
        assert!(unknown.is_empty(), "{file} names metrics that src/metrics.rs does not export: {unknown:?}");
    }
    let all_exprs: Vec<(String, String)> = exprs
        .iter()
        .map(|(id, r, e)| (format!("dashboard panel {id} target {r}"), e.clone()))
        .chain(rule_exprs(&rules).into_iter().map(|e| ("rules.yml".to_owned(), e)))
        .collect();
    assert!(all_exprs.len() > 20, "too few expressions found: {}", all_exprs.len());
    for (place, expr) in &all_exprs {
        let unknown: Vec<String> = labels_in_promql(expr).into_iter().filter(|l| !labels.contains(l)).collect();
        assert!(unknown.is_empty(), "{place} uses labels isogate does not export: {unknown:?} in {expr}");
    }

    // The YAML files parse, where PyYAML is at hand (no Rust YAML parser is a dependency;
    // promtool has parsed the Prometheus files above either way).
    let yaml_files: Vec<PathBuf> = ["deploy/k8s", "deploy/prometheus"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    assert!(yaml_files.len() >= 9, "{yaml_files:?}");
    let pyyaml = Command::new("python3").args(["-c", "import yaml"]).output().is_ok_and(|o| o.status.success());
    if pyyaml {
        let out = Command::new("python3")
            .args(["-c", "import sys, yaml\nfor f in sys.argv[1:]:\n    list(yaml.safe_load_all(open(f)))"])
            .args(&yaml_files)
            .output()
            .unwrap();
        assert!(out.status.success(), "a YAML file under deploy/ does not parse:\n{}", output_text(&out));
    } else {
        eprintln!("note: python3 with PyYAML is not available; deploy/k8s/*.yaml were not parsed");
    }
}

#[test]
fn kubernetes_configmap_passes_isogate_check() {
    let configmap = read("deploy/k8s/configmap.yaml");
    // Pools name cluster Services, which resolve only inside the cluster: point them at
    // loopback for the check, as everything else stays as deployed.
    let toml: String = yaml_block(&configmap, "isogate.toml")
        .lines()
        .map(|line| match (line.find(".svc.cluster.local:"), line.find('"')) {
            (Some(svc), Some(quote)) if quote < svc => {
                format!("{}127.0.0.1{}", &line[..=quote], &line[svc + ".svc.cluster.local".len()..])
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let scratch = Scratch::new("deploy-k8s");
    std::fs::write(scratch.0.join("isogate.toml"), &toml).unwrap();
    std::fs::write(scratch.0.join("tenants.csv"), yaml_block(&configmap, "tenants.csv")).unwrap();

    // The Secret's key, the Deployment's env var and the config's secret_env agree.
    let secret_var = "ISOGATE_PARTNER_SECRET";
    assert!(toml.contains(&format!("secret_env = \"{secret_var}\"")), "isogate.toml reads {secret_var}");
    assert!(read("deploy/k8s/secret.yaml").contains(&format!("{secret_var}:")), "secret.yaml holds {secret_var}");
    assert!(read("deploy/k8s/deployment.yaml").contains(&format!("name: {secret_var}")), "the pod gets {secret_var}");

    let out = Command::new(env!("CARGO_BIN_EXE_isogate"))
        .args(["check", "-c"])
        .arg(scratch.0.join("isogate.toml"))
        .env(secret_var, "k8s-example-secret-of-at-least-32-bytes-0123456789")
        .output()
        .unwrap();
    assert!(out.status.success(), "isogate check refused the ConfigMap's isogate.toml:\n{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK ("), "{}", output_text(&out));
    // The Kubernetes-specific settings the Deployment relies on.
    for needle in [r#"address = "0.0.0.0:9901""#, r#"address = "0.0.0.0:8080""#, r#"output = "stdout""#] {
        assert!(toml.contains(needle), "isogate.toml must set {needle}");
    }
}

/// The series `IsogateConfigReloadFailed` reads: 1 on a fresh instance (whose reload
/// counters are new and at 0), 0 after a broken file is refused, 1 again once a good one
/// is reloaded.
#[test]
fn reload_alert_series_tracks_the_last_reload() {
    let ups = standard_upstreams();
    let dev = free_addr();
    let config = standard_config(&ups, "");
    let gw = Gateway::start(&config, &[("@DEV@", dev)]);
    let successful = "isogate_config_last_reload_successful ";
    assert_eq!(gw.metric(successful), Some(1.0), "a fresh instance");
    assert_eq!(gw.metric(r#"isogate_config_reloads_total{result="error"}"#), Some(0.0));

    std::fs::write(&gw.config_path, "[environments.prod\nbroken = ").unwrap();
    gw.signal("HUP");
    eventually("the broken file is refused", || (gw.metric(successful) == Some(0.0)).then_some(()));
    assert_eq!(gw.metric(r#"isogate_config_reloads_total{result="error"}"#), Some(1.0));

    gw.write_config(&config);
    gw.signal("HUP");
    eventually("the good file is reloaded", || (gw.metric(successful) == Some(1.0)).then_some(()));
    assert!(gw.metric(r#"isogate_config_reloads_total{result="ok"}"#) >= Some(1.0));
}

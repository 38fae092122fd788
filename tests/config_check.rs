//! `isogate check -c FILE` against the real binary.
//!
//! - Every `*.toml` in `config/` (the shipped example and the demo config) passes.
//! - The example documents every key and enum value of the on-disk schema, and its
//!   commented-out alternatives (JWKS issuer, `secret_env`, `discovery_url`) are valid.
//! - Every broken fixture under `tests/fixtures/config/bad/` fails with exit code 1 and
//!   exactly the expected `file:line:col: key.path: problem` lines, one per error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A variable the fixtures name as an HMAC secret source; removed from every child.
const UNSET_VAR: &str = "ISOGATE_CONFIG_CHECK_TEST_UNSET_SECRET";

/// A 64-character secret for `config/demo.toml` (`secret_env = "ISOGATE_DEMO_SECRET"`).
const DEMO_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/config")
}

/// What one `isogate check` run produced.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The non-empty stderr lines.
    fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

/// Runs `isogate check -c CONFIG` in `dir` (so paths in messages are as written here),
/// with `envs` set on the child only. Logging is off so stderr holds only the errors.
fn check(dir: &Path, config: &str, envs: &[(&str, &str)]) -> Run {
    check_without(dir, config, envs, &[])
}

/// Like `check`, also removing the variables in `remove` from the child's environment.
fn check_without(dir: &Path, config: &str, envs: &[(&str, &str)], remove: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_isogate"));
    cmd.current_dir(dir).args(["check", "-c", config]).env("RUST_LOG", "off").env_remove(UNSET_VAR);
    for key in remove {
        cmd.env_remove(key);
    }
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run the isogate binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `*.toml` files directly in `dir`, sorted by name.
fn toml_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_name().expect("file name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that `config` passes `check` (exit 0, `CONFIG: OK (` on stdout, no stderr)
/// and returns stdout.
fn assert_ok(dir: &Path, config: &str, envs: &[(&str, &str)]) -> String {
    let run = check(dir, config, envs);
    assert_eq!(run.code, Some(0), "`isogate check -c {config}` failed: {run:#?}");
    assert!(run.stdout.starts_with(&format!("{config}: OK (")), "{config}: unexpected stdout: {run:#?}");
    assert!(run.stderr.is_empty(), "{config}: unexpected stderr: {run:#?}");
    run.stdout
}

/// Asserts that fixture `bad/NAME` fails with exit code 1 and exactly the `expected`
/// errors, in any order: each is the rendered prefix up to and including the key path
/// (`bad/x.toml:7:16: environments.prod.default_pool:`) and a fragment of the message.
fn assert_errors(config: &str, expected: &[(&str, &str)]) {
    let run = check(&fixtures(), config, &[]);
    assert_eq!(run.code, Some(1), "{config}: expected exit code 1: {run:#?}");
    assert!(run.stdout.is_empty(), "{config}: unexpected stdout: {run:#?}");
    let lines = run.error_lines();
    assert_eq!(
        lines.len(),
        expected.len(),
        "{config}: expected {} error line(s), got:\n{}",
        expected.len(),
        run.stderr
    );
    for (prefix, fragment) in expected {
        let matching = lines.iter().filter(|l| l.starts_with(prefix) && l.contains(fragment)).count();
        assert_eq!(
            matching, 1,
            "{config}: no single line starts with {prefix:?} and contains {fragment:?}; got:\n{}",
            run.stderr
        );
    }
    for line in &lines {
        assert!(line.contains("; fix: "), "{config}: error without a fix: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// Shipped configuration files
// ---------------------------------------------------------------------------------------

#[test]
fn every_config_file_in_config_dir_passes_check() {
    let files = toml_files(&root().join("config"));
    assert!(
        files.iter().any(|f| f == "isogate.example.toml") && files.iter().any(|f| f == "demo.toml"),
        "expected at least isogate.example.toml and demo.toml in config/, found {files:?}"
    );
    for name in &files {
        assert_ok(&root(), &format!("config/{name}"), &[("ISOGATE_DEMO_SECRET", DEMO_SECRET)]);
    }
}

#[test]
fn example_config_compiles_to_the_documented_scenario() {
    let stdout = assert_ok(&root(), "config/isogate.example.toml", &[]);
    assert_eq!(stdout.trim_end(), "config/isogate.example.toml: OK (2 listener(s), 7 route(s))");
}

#[test]
fn demo_config_needs_its_secret() {
    let run = check_without(&root(), "config/demo.toml", &[], &["ISOGATE_DEMO_SECRET"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let expected =
        "config/demo.toml:26:14: issuers[0].secret_env: environment variable `ISOGATE_DEMO_SECRET` is not set";
    assert!(run.stderr.starts_with(expected), "{run:#?}");
}

/// `(struct or enum name, field name or snake_case value)` pairs.
type Names = Vec<(String, String)>;

/// Field names and enum values of `src/config/file.rs`, by struct or enum name.
fn schema() -> (Names, Names) {
    let text = std::fs::read_to_string(root().join("src/config/file.rs")).expect("read src/config/file.rs");
    let (mut fields, mut variants) = (Vec::new(), Vec::new());
    let mut in_struct: Option<String> = None;
    let mut in_enum: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            in_struct = rest.split_whitespace().next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("pub enum ") {
            in_enum = rest.split_whitespace().next().map(str::to_owned);
        } else if line == "}" {
            in_struct = None;
            in_enum = None;
        } else if let (Some(s), Some(rest)) = (&in_struct, line.strip_prefix("    pub ")) {
            let field = rest.split(':').next().expect("field name").trim();
            fields.push((s.clone(), field.to_owned()));
        } else if let (Some(e), Some(rest)) = (&in_enum, line.strip_prefix("    ")) {
            if let Some(variant) = rest.strip_suffix(',').filter(|v| v.chars().all(char::is_alphanumeric)) {
                variants.push((e.clone(), snake_case(variant)));
            }
        }
    }
    (fields, variants)
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn example_config_documents_every_key_and_value_of_the_schema() {
    let example = std::fs::read_to_string(root().join("config/isogate.example.toml")).expect("read the example");
    // Key lines, live or commented out (`# key = ...`, `# # key = ...`).
    let keys: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches(['#', ' ']))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .collect();
    let (fields, variants) = schema();
    assert!(fields.len() > 60 && variants.len() >= 6, "the schema parser found too little: {fields:?} {variants:?}");
    let mut missing = Vec::new();
    for (structure, field) in &fields {
        let documented = if structure == "File" {
            let sections = [format!("[{field}]"), format!("[[{field}]]"), format!("[{field}.")];
            // Live or commented out, like keys.
            example
                .lines()
                .map(|l| l.trim_start_matches(['#', ' ']))
                .any(|l| sections.iter().any(|s| l.starts_with(s.as_str())))
        } else {
            // A key, or a nested table such as `[routes.cors]`.
            let table = format!(".{field}]");
            keys.contains(&field.as_str())
                || example
                    .lines()
                    .map(|l| l.trim_start_matches(['#', ' ']))
                    .any(|l| l.starts_with('[') && l.ends_with(&table))
        };
        if !documented {
            missing.push(format!("{structure}.{field}"));
        }
    }
    for (enumeration, value) in &variants {
        if !example.contains(&format!("\"{value}\"")) {
            missing.push(format!("{enumeration} value \"{value}\""));
        }
    }
    assert!(missing.is_empty(), "config/isogate.example.toml does not document: {missing:?}");
}

/// Uncomments the example's `# [[issuers]]` block (up to the next blank line).
fn uncomment_remote_issuer(text: &str) -> String {
    uncomment_block(text, "# [[issuers]]")
}

/// Uncomments every block starting with the line `header` (up to the next blank line).
fn uncomment_block(text: &str, header: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in text.lines() {
        if line == header {
            in_block = true;
        } else if line.is_empty() {
            in_block = false;
        }
        out.push_str(if in_block { line.strip_prefix("# ").unwrap_or(line) } else { line });
        out.push('\n');
    }
    out
}

fn replace_line(text: &str, from: &str, to: &str) -> String {
    let count = text.lines().filter(|l| *l == from).count();
    assert_eq!(count, 1, "expected exactly one line {from:?} in the example");
    text.lines().map(|l| if l == from { to } else { l }).collect::<Vec<_>>().join("\n") + "\n"
}

#[test]
fn example_config_commented_alternatives_are_valid() {
    let example = std::fs::read_to_string(root().join("config/isogate.example.toml")).expect("read the example");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_check_alternatives");
    std::fs::create_dir_all(dir.join("keys")).expect("create the scratch directory");
    for file in ["keys/example-idp.pub.pem", "keys/example-partner.secret", "tenants.example.csv"] {
        std::fs::copy(root().join("config").join(file), dir.join(file)).expect("copy a config file");
    }
    std::fs::copy(fixtures().join("keys/internal-ca.pem"), dir.join("keys/internal-ca.pem")).expect("copy the CA");

    // A third issuer with a JWKS URL, and the partner secret from the environment.
    let jwks = uncomment_remote_issuer(&example);
    assert!(jwks.contains("\njwks_url = \"https://"), "the remote issuer block was not uncommented");
    let jwks = replace_line(&jwks, "secret_file = \"keys/example-partner.secret\"", "");
    let jwks =
        replace_line(&jwks, "# secret_env = \"ISOGATE_PARTNER_SECRET\"", "secret_env = \"ISOGATE_PARTNER_SECRET\"");
    std::fs::write(dir.join("jwks.toml"), &jwks).expect("write jwks.toml");
    assert_ok(&dir, "jwks.toml", &[("ISOGATE_PARTNER_SECRET", DEMO_SECRET)]);

    // The same issuer through OpenID discovery instead.
    let discovery = replace_line(
        &jwks,
        "jwks_url = \"https://sso.example.org/realms/customers/protocol/openid-connect/certs\"",
        "",
    );
    let discovery = replace_line(
        &discovery,
        "# discovery_url = \"https://sso.example.org/realms/customers/.well-known/openid-configuration\"",
        "discovery_url = \"https://sso.example.org/realms/customers/.well-known/openid-configuration\"",
    );
    std::fs::write(dir.join("discovery.toml"), &discovery).expect("write discovery.toml");
    assert_ok(&dir, "discovery.toml", &[("ISOGATE_PARTNER_SECRET", DEMO_SECRET)]);

    // Both key sources at once is an error, pointing at the issuer's name.
    let both = replace_line(
        &jwks,
        "secret_env = \"ISOGATE_PARTNER_SECRET\"",
        "secret_env = \"ISOGATE_PARTNER_SECRET\"\nsecret_file = \"keys/example-partner.secret\"",
    );
    std::fs::write(dir.join("both.toml"), &both).expect("write both.toml");
    let run = check(&dir, "both.toml", &[("ISOGATE_PARTNER_SECRET", DEMO_SECRET)]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(": issuers[1]: an issuer needs exactly one of public_key_file, secret_env"),
        "{run:#?}"
    );
}

#[test]
fn example_database_front_is_valid_and_its_mistakes_are_named() {
    let example = std::fs::read_to_string(root().join("config/isogate.example.toml")).expect("read the example");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_check_databases");
    std::fs::create_dir_all(dir.join("keys")).expect("create the scratch directory");
    for file in ["keys/example-idp.pub.pem", "keys/example-partner.secret", "tenants.example.csv"] {
        std::fs::copy(root().join("config").join(file), dir.join(file)).expect("copy a config file");
    }
    std::fs::write(dir.join("keys/db-master.secret"), format!("{DEMO_SECRET}\n")).expect("write the master secret");
    std::fs::create_dir_all(dir.join("tls")).expect("create tls/");
    std::fs::copy(root().join("tests/fixtures/tls/ca.pem"), dir.join("tls/db-ca.pem")).expect("copy the CA");
    let tls = root().join("tests/fixtures/tls");
    let front =
        ["# [[database_listeners]]", "# [databases.prod-eu-1]", "# [databases.prod-globex-db]", "# [database_cancel]"]
            .iter()
            .fold(example, |text, header| uncomment_block(&text, header));
    let certificate = format!(
        "\n[[certificates]]\ncert_file = \"{}\"\nkey_file = \"{}\"\nserver_names = [\"a.test\"]\n",
        tls.join("a.pem").display(),
        tls.join("a.key").display()
    );
    let env = [("ISOGATE_GLOBEX_DB_PASSWORD", "globex-password")];
    std::fs::write(dir.join("front.toml"), format!("{front}{certificate}")).expect("write front.toml");
    assert_ok(&dir, "front.toml", &env);
    // The OAUTHBEARER alternative, with its scope.
    let oauth = replace_line(&front, "client_auth = \"password\"", "client_auth = \"oauthbearer\"");
    let oauth = replace_line(&oauth, "# oauth_scope = \"openid\"", "oauth_scope = \"openid\"");
    std::fs::write(dir.join("oauth.toml"), format!("{oauth}{certificate}")).expect("write oauth.toml");
    assert_ok(&dir, "oauth.toml", &env);

    // Each mistake is named by its key, with the fix.
    let mistakes = [
        (
            "allow_plaintext = false",
            "allow_plaintext = true",
            "database_listeners[0].allow_plaintext: plain text is allowed only on a loopback address",
        ),
        (
            "password = \"derived\"",
            "password = \"derived\"\npassword_env = \"X\"",
            "databases.prod-eu-1: a database needs exactly one of password_env and password_file",
        ),
        (
            "user = \"tenant_{tenant}\"",
            "user = \"tenant_{tenant_id}\"",
            "databases.prod-eu-1.user: unknown placeholder",
        ),
        (
            "[databases.prod-globex-db]",
            "[databases.other-db]",
            "db_pool: `prod-globex-db` names no [databases.prod-globex-db]",
        ),
        (
            "max_server_connections = 20",
            "max_server_connections = 0",
            "databases.prod-eu-1.max_server_connections: 0 is out of range",
        ),
        (
            "server_idle_timeout_seconds = 600",
            "server_idle_timeout_seconds = 0",
            "databases.prod-eu-1.server_idle_timeout_seconds: 0 seconds is out of range",
        ),
        (
            "server_lifetime_seconds = 3600",
            "server_lifetime_seconds = 604801",
            "databases.prod-eu-1.server_lifetime_seconds: 604801 seconds is out of range",
        ),
        ("tls = true", "tls = false", "databases.prod-eu-1.ca_file: ca_file is set but tls is not enabled"),
        ("peer_id = 1", "peer_id = 0", "database_cancel.peer_id: 0 is out of range"),
        (
            "peers = { 2 = \"10.0.0.2:6432\", 3 = \"10.0.0.3:6432\" }",
            "peers = { 1 = \"10.0.0.2:6432\", x = \"10.0.0.3:6432\" }",
            "database_cancel.peers.1: peer 1 is this process's own peer_id",
        ),
        (
            "peers = { 2 = \"10.0.0.2:6432\", 3 = \"10.0.0.3:6432\" }",
            "peers = { 2 = \"10.0.0.2\" }",
            "database_cancel.peers.2: `10.0.0.2` is not an ip:port address",
        ),
        ("ca_file = \"tls/db-ca.pem\"", "", "databases.prod-eu-1.ca_file: TLS to the server needs the CA"),
        (
            "client_auth = \"password\"",
            "client_auth = \"password\"\noauth_scope = \"openid\"",
            "database_listeners[0].oauth_scope: oauth_scope is only sent to OAUTHBEARER clients",
        ),
        (
            "client_auth = \"password\"",
            "client_auth = \"oauthbearer\"\noauth_scope = \"a\\\"b\"",
            "database_listeners[0].oauth_scope: `a\"b` is not an OAuth scope",
        ),
    ];
    for (from, to, message) in mistakes {
        let broken = replace_line(&front, from, to);
        std::fs::write(dir.join("broken.toml"), format!("{broken}{certificate}")).expect("write broken.toml");
        let run = check(&dir, "broken.toml", &env);
        assert_eq!(run.code, Some(1), "{from} -> {to}: {run:#?}");
        assert!(run.stderr.contains(message), "{from} -> {to}: {run:#?}");
    }
    // The listener's environment by server name, its own certificate, and the client
    // certificate towards the server: each mistake named by its key. (Inside the
    // uncommented blocks, `# # key` lines are `# key` lines.)
    let listener = "\nenvironment = \"prod\"\n# Or:";
    let by_name = |map: &str| format!("\nserver_names = {map}\n# Or:");
    let tls_dir = dir.join("tls");
    std::fs::copy(tls.join("client.pem"), tls_dir.join("isogate-client.pem")).expect("copy the client certificate");
    std::fs::copy(tls.join("client.key"), tls_dir.join("isogate-client.key")).expect("copy its key");
    let client_pair =
        "# client_cert_file = \"tls/isogate-client.pem\"\n# client_key_file = \"tls/isogate-client.key\"\n";
    let client_live = client_pair.replace("# ", "");
    let prod_map = by_name("{ \"db.prod.example.com\" = \"prod\" }");
    let one = |from: &str, to: &str| vec![(from.to_owned(), to.to_owned())];
    let mistakes: Vec<(Vec<(String, String)>, &str)> = vec![
        (
            one(listener, &listener.replace("# Or:", "server_names = { \"db.prod.example.com\" = \"prod\" }\n# Or:")),
            "database_listeners[0]: a database listener needs exactly one of environment and server_names",
        ),
        (
            one(listener, "\n# Or:"),
            "database_listeners[0]: a database listener needs exactly one of environment and server_names",
        ),
        (one(listener, &by_name("{}")), "database_listeners[0].server_names: the map names no server name"),
        (
            one(listener, &by_name("{ \"db.qa.example.com\" = \"qa\" }")),
            "database_listeners[0].server_names.\"db.qa.example.com\": environment `qa` is not defined",
        ),
        (
            one(listener, &by_name("{ \"\" = \"prod\" }")),
            "database_listeners[0].server_names.\"\": `` is not a DNS name",
        ),
        (
            one(listener, &by_name("{ \"db.prod.example.com\" = \"prod\", \"DB.prod.example.com\" = \"prod\" }")),
            "is listed twice (names are compared without case)",
        ),
        (
            vec![
                (listener.to_owned(), prod_map),
                ("allow_plaintext = false".to_owned(), "allow_plaintext = true".to_owned()),
            ],
            "database_listeners[0].allow_plaintext: a plain-text client sends no server name",
        ),
        (
            one("# cert_file = \"tls/db.example.com.pem\"\n", "cert_file = \"tls/isogate-client.pem\"\n"),
            "database_listeners[0].key_file: cert_file is set without key_file",
        ),
        (
            one("# client_cert_file = \"tls/isogate-client.pem\"\n", "client_cert_file = \"tls/isogate-client.pem\"\n"),
            "databases.prod-eu-1.client_key_file: client_cert_file is set without client_key_file",
        ),
        (
            one(client_pair, &client_live.replace("isogate-client.pem", "missing.pem")),
            "databases.prod-eu-1.client_cert_file: cannot use",
        ),
        (
            one(client_pair, &client_live.replace("tls/isogate-client.key", "keys/db-master.secret")),
            "databases.prod-eu-1.client_key_file: cannot read a private key",
        ),
        (
            vec![
                (client_pair.to_owned(), client_live.clone()),
                ("08006).\n# Default: false.\ntls = true\n".to_owned(), "08006).\ntls = false\n".to_owned()),
            ],
            "databases.prod-eu-1.client_cert_file: client_cert_file is set but tls is not enabled",
        ),
    ];
    for (edits, message) in mistakes {
        let broken = edits.iter().fold(front.clone(), |text, (from, to)| {
            assert_eq!(text.matches(from.as_str()).count(), 1, "{from:?} once in the example's database front");
            text.replace(from.as_str(), to)
        });
        std::fs::write(dir.join("broken.toml"), format!("{broken}{certificate}")).expect("write broken.toml");
        let run = check(&dir, "broken.toml", &env);
        assert_eq!(run.code, Some(1), "{edits:?}: {run:#?}");
        assert!(run.stderr.contains(message), "{edits:?}: {run:#?}");
    }
    // A listener with its own certificate needs no [[certificates]], and the client
    // certificate pair is accepted.
    let own = front
        .replace(
            listener,
            &listener.replace(
                "# Or:",
                "cert_file = \"tls/isogate-client.pem\"\nkey_file = \"tls/isogate-client.key\"\n# Or:",
            ),
        )
        .replace(client_pair, &client_live);
    std::fs::write(dir.join("own-cert.toml"), &own).expect("write own-cert.toml");
    assert_ok(&dir, "own-cert.toml", &env);
    // Without a certificate, a TLS database listener cannot start.
    std::fs::write(dir.join("no-cert.toml"), &front).expect("write no-cert.toml");
    let run = check(&dir, "no-cert.toml", &env);
    assert!(run.stderr.contains("a database listener needs TLS, but no certificate is configured"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------
// Broken files: one mistake each, with the exact location, key path and message
// ---------------------------------------------------------------------------------------

#[test]
fn the_fixture_template_itself_is_valid() {
    assert_ok(&fixtures(), "good/minimal.toml", &[]);
}

#[test]
fn every_bad_fixture_fails_with_well_formed_errors() {
    let files = toml_files(&fixtures().join("bad"));
    assert!(files.len() >= 20, "fixtures missing: {files:?}");
    for name in files {
        let run = check(&fixtures(), &format!("bad/{name}"), &[]);
        assert_eq!(run.code, Some(1), "bad/{name}: {run:#?}");
        assert!(!run.error_lines().is_empty(), "bad/{name}: no error printed");
        for line in run.error_lines() {
            assert!(line.starts_with("bad/"), "bad/{name}: error without its file: {line}");
            assert!(line.contains("; fix: "), "bad/{name}: error without a fix: {line}");
        }
    }
}

#[test]
fn toml_syntax_error() {
    assert_errors("bad/syntax.toml", &[("bad/syntax.toml:9:19: ", "unclosed table, expected `]`")]);
}

#[test]
fn misspelt_key_points_at_its_line() {
    assert_errors(
        "bad/unknown_key.toml",
        &[(
            "bad/unknown_key.toml:3:1: ",
            "unknown field `adress`, expected one of `address`, `environment`, `tls`, `http2`, `h2c`",
        )],
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    assert_errors(
        "bad/wrong_type.toml",
        &[("bad/wrong_type.toml:3:11: ", "invalid type: integer `18080`, expected a string")],
    );
}

#[test]
fn unknown_default_pool_points_at_the_value() {
    assert_errors(
        "bad/unknown_pool.toml",
        &[(
            "bad/unknown_pool.toml:7:16: environments.prod.default_pool:",
            "pool `prod-mian` is not defined (defined: prod-shared)",
        )],
    );
}

#[test]
fn unknown_default_plan_points_at_the_value() {
    assert_errors(
        "bad/unknown_plan.toml",
        &[(
            "bad/unknown_plan.toml:8:16: environments.prod.default_plan:",
            "plan `gold` is not defined (defined: silver)",
        )],
    );
}

#[test]
fn unknown_environment_in_a_route() {
    assert_errors(
        "bad/unknown_env_route.toml",
        &[("bad/unknown_env_route.toml:20:15: routes[0].environment:", "environment `qa` is not defined")],
    );
}

#[test]
fn unknown_environment_in_a_listener() {
    assert_errors(
        "bad/unknown_env_listener.toml",
        &[(
            "bad/unknown_env_listener.toml:4:15: listeners[0].environment:",
            "environment `staging` is not defined (defined: prod)",
        )],
    );
}

#[test]
fn http2_settings_that_contradict_tls() {
    assert_errors(
        "bad/http2_mismatch.toml",
        &[
            ("bad/http2_mismatch.toml:3:11: listeners[0].h2c:", "h2c is HTTP/2 without TLS"),
            ("bad/http2_mismatch.toml:18:12: pools.plain-h2.protocol:", "\"h2\" is HTTP/2 over TLS"),
            ("bad/http2_mismatch.toml:22:12: pools.tls-h2c.protocol:", "\"h2c\" is HTTP/2 without TLS"),
        ],
    );
}

#[test]
fn duplicate_route_names() {
    assert_errors(
        "bad/duplicate_route.toml",
        &[("bad/duplicate_route.toml:23:8: routes[1].name:", "route name `app` is already used by routes[0]")],
    );
}

#[test]
fn hmac_issuer_with_a_public_key_is_algorithm_confusion() {
    assert_errors(
        "bad/hs256_public_key.toml",
        &[(
            "bad/hs256_public_key.toml:16:19: issuers[0].public_key_file:",
            "HMAC algorithms cannot be verified with a public key (this is the RS256→HS256 confusion attack)",
        )],
    );
}

#[test]
fn algorithm_none_is_refused() {
    assert_errors(
        "bad/alg_none.toml",
        &[("bad/alg_none.toml:15:15: issuers[0].algorithms[0]:", "`none` is not a supported algorithm")],
    );
}

#[test]
fn algorithms_of_two_families_are_refused() {
    assert_errors(
        "bad/alg_mixed.toml",
        &[("bad/alg_mixed.toml:15:14: issuers[0].algorithms:", "the algorithms mix key families")],
    );
}

#[test]
fn missing_secret_environment_variable() {
    assert_errors(
        "bad/missing_secret_env.toml",
        &[(
            "bad/missing_secret_env.toml:16:14: issuers[0].secret_env:",
            "environment variable `ISOGATE_CONFIG_CHECK_TEST_UNSET_SECRET` is not set",
        )],
    );
}

#[test]
fn short_hmac_secret() {
    assert_errors(
        "bad/short_secret.toml",
        &[(
            "bad/short_secret.toml:16:15: issuers[0].secret_file:",
            "the HMAC secret is 16 bytes; at least 32 are required",
        )],
    );
}

#[test]
fn invalid_header_name() {
    assert_errors(
        "bad/bad_header.toml",
        &[("bad/bad_header.toml:22:10: headers.tenant:", "`x-isogate tenant` is not a valid header name")],
    );
}

#[test]
fn host_bound_to_two_environments() {
    assert_errors(
        "bad/host_two_envs.toml",
        &[(
            "bad/host_two_envs.toml:10:24: environments.stage.hosts[1]:",
            "host `api.test` is already bound to environment `prod`",
        )],
    );
}

#[test]
fn tenant_map_bad_lines_point_into_the_map_file() {
    assert_errors(
        "bad/tenant_map_bad_line.toml",
        &[
            ("bad/tenants_bad_line.csv:3:1: environments.prod.tenant_map_file:", "line 3 has no comma"),
            ("bad/tenants_bad_line.csv:4:1: environments.prod.tenant_map_file:", "line 4 is not `tenant,pool"),
        ],
    );
}

#[test]
fn tenant_map_unknown_pool_points_at_the_pool_in_the_map_file() {
    assert_errors(
        "bad/tenant_map_unknown_pool.toml",
        &[(
            "bad/tenants_unknown_pool.csv:3:8: environments.prod.tenant_map_file:",
            "pool `prod-globexx` is not defined",
        )],
    );
}

#[test]
fn tenant_mapped_inline_and_in_the_map_file() {
    assert_errors(
        "bad/tenant_map_inline_twice.toml",
        &[(
            "bad/tenants_inline_twice.csv:3:1: environments.prod.tenant_map_file:",
            "tenant `umbrella` is also mapped inline",
        )],
    );
}

#[test]
fn no_listener() {
    assert_errors("bad/no_listeners.toml", &[("bad/no_listeners.toml: listeners:", "no listener is configured")]);
}

#[test]
fn no_route() {
    assert_errors("bad/no_routes.toml", &[("bad/no_routes.toml: routes:", "no route is configured")]);
}

#[test]
fn empty_file_lists_every_missing_section() {
    assert_errors(
        "bad/empty.toml",
        &[
            ("bad/empty.toml: listeners:", "no listener is configured"),
            ("bad/empty.toml: issuers:", "no issuer is configured"),
            ("bad/empty.toml: environments:", "no environment is defined"),
            ("bad/empty.toml: routes:", "no route is configured"),
        ],
    );
}

#[test]
fn unmapped_tenants_default_pool_needs_a_default_pool() {
    assert_errors(
        "bad/unmapped_default.toml",
        &[(
            "bad/unmapped_default.toml:5:15: environments.prod:",
            "unmapped tenants go to the default pool, but no default_pool is set",
        )],
    );
}

#[test]
fn several_semantic_errors_are_all_reported() {
    let file = "bad/several_errors.toml";
    let expected = [
        ("bad/several_errors.toml:3:11: admin.address:", "the admin listener shares an address with a proxy listener"),
        ("bad/several_errors.toml:9:11: listeners[1].address:", "127.0.0.1:18080 is listed twice"),
        ("bad/several_errors.toml:12:8: headers.user:", "`x-isogate-user:` is not a valid header name"),
        ("bad/several_errors.toml:16:16: environments.prod.default_pool:", "pool `prod-mian` is not defined"),
        ("bad/several_errors.toml:17:12: environments.prod.issuers[0]:", "issuer `idpp` is not defined"),
        ("bad/several_errors.toml:20:12: pools.prod-shared.servers[0]:", "`127.0.0.1` is not a reachable host:port"),
        ("bad/several_errors.toml:30:15: routes[0].path_prefix:", "`api` does not start with `/`"),
        ("bad/several_errors.toml:31:15: routes[0].environment:", "environment `qa` is not defined"),
        ("bad/several_errors.toml:34:8: routes[1].name:", "route name `api` is already used by routes[0]"),
    ];
    assert_eq!(expected.len(), 9);
    assert_errors(file, &expected);
}

#[test]
fn missing_config_file() {
    let run = check(&fixtures(), "does/not/exist.toml", &[]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert!(
        run.stderr.starts_with("does/not/exist.toml: cannot read the configuration file: "),
        "unclear message for a missing file: {run:#?}"
    );
    assert!(run.stderr.contains("No such file or directory"), "{run:#?}");
}

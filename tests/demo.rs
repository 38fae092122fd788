//! The README's first command: `isogate demo` must show isolation working on a fresh
//! machine. `--check` sends the printed requests and fails if any result differs.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::process::Command;

#[test]
fn demo_shows_isolation_working() {
    let out = Command::new(env!("CARGO_BIN_EXE_isogate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--check"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("curl -s -i").count(), 4, "{stdout}");
    for line in [
        "ok   stage token on stage: got 200 stage-shared",
        "ok   prod token on prod: got 200 prod-shared",
        "ok   stage token refused on prod: got 403 wrong_environment",
        "ok   tenant globex lands on its own prod pool: got 200 prod-globex",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let audit_lines = stdout.lines().filter(|l| l.starts_with("{\"ts\"")).count();
    assert!(audit_lines >= 3, "audit lines are printed: {stdout}");
}

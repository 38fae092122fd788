//! The configuration parser and compiler: `Source::parse`, then `Snapshot::compile`.
//!
//! The text stands in for `config/fuzz.toml`, so relative paths in it resolve against
//! `config/` and reach the example's real key files and tenant map.
//!
//! Checked: nothing panics; any text gives either a snapshot or at least one error, and
//! every error has a problem and a fix, points inside the file (or at another file),
//! and renders.
#![no_main]

use std::net::SocketAddr;

use isogate::config::{At, ConfigError, Source};
use isogate::snapshot::Snapshot;
use isogate_fuzz::here;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = Source { path: here("../config/fuzz.toml"), text: text.to_owned() };
    let file = match source.parse() {
        Ok(file) => file,
        Err(e) => return check(&source, &[e]),
    };
    // Compiling resolves pool server names; only literal addresses keep the run off the
    // network (and its time independent of a resolver).
    let literal =
        file.pools.values().all(|p| p.servers.get_ref().iter().all(|s| s.get_ref().parse::<SocketAddr>().is_ok()));
    if !literal {
        return;
    }
    let env = |name: &str| (name == "ISOGATE_FUZZ_SECRET").then(|| "0123456789abcdef0123456789abcdef".to_owned());
    if let Err(errors) = Snapshot::compile(&file, &source, &env) {
        check(&source, &errors);
    }
});

fn check(source: &Source, errors: &[ConfigError]) {
    assert!(!errors.is_empty(), "refused without an error");
    for e in errors {
        assert!(!e.problem.is_empty() && !e.fix.is_empty(), "an error without a problem or a fix: {e:?}");
        if let At::Span(span) = &e.at {
            assert!(span.start <= span.end && span.end <= source.text.len(), "span {span:?} outside the file: {e:?}");
        }
        let rendered = source.render(std::slice::from_ref(e));
        assert!(rendered.starts_with(&*source.path.to_string_lossy()) || matches!(e.at, At::File { .. }), "{rendered}");
    }
}

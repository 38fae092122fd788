//! Header stripping (`HeaderPlan::strip`) with fuzzed configuration and request headers.
//!
//! Input, one item a line: the reserved prefix; then a comma-separated list whose
//! `key=name` items rename one of the trusted headers (`tenant=x-tenant`) and whose other
//! items are extra names to strip; then request headers as `Name: value`.
//!
//! Checked: nothing panics; after stripping, neither the header map nor the head as it
//! goes upstream on the wire holds a header whose name folds (ASCII case, `_` read as
//! `-`) to a trusted or extra name or starts with the reserved prefix; every other
//! header is still there with all its values, in order; the count returned is the
//! number of values removed.
#![no_main]

use isogate::config::file::Headers;
use isogate::headers::HeaderPlan;
use isogate_fuzz::fold;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use toml::Spanned;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(raw) = configure(lines.next().unwrap_or_default(), lines.next().unwrap_or_default()) else { return };
    let Ok(plan) = HeaderPlan::compile(&raw) else { return };
    let prefix = fold(raw.reserved_prefix.get_ref().as_bytes());
    let names: Vec<Vec<u8>> = trusted(&raw).chain(raw.strip.iter()).map(|n| fold(n.get_ref().as_bytes())).collect();
    let identity = |name: &[u8]| {
        let name = fold(name);
        name.starts_with(&prefix) || names.contains(&name)
    };

    let mut req = RequestHeader::build("GET", b"/", None).expect("request head");
    let mut kept = Vec::new();
    let mut removable = 0;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if req.append_header(name.to_owned(), value).is_err() {
            continue;
        }
        if identity(name.as_bytes()) {
            removable += 1;
        } else {
            kept.push((name.to_ascii_lowercase().into_bytes(), value.to_vec()));
        }
    }

    let removed = plan.strip(&mut req);
    assert_eq!(removed, removable, "strip reports {removed} removed values, {removable} were identity headers");
    for name in req.headers.keys() {
        assert!(!identity(name.as_str().as_bytes()), "{name} survived stripping");
    }
    let mut wire = Vec::new();
    req.header_to_h1_wire(&mut wire);
    let sent: Vec<(Vec<u8>, Vec<u8>)> = wire
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = l.strip_suffix(b"\r").expect("CRLF line");
            let at = l.windows(2).position(|w| w == b": ").expect("name: value");
            (l[..at].to_ascii_lowercase(), l[at + 2..].to_vec())
        })
        .collect();
    for (name, _) in &sent {
        assert!(!identity(name), "{} goes upstream", String::from_utf8_lossy(name));
    }
    for (name, value) in &kept {
        let sent_values: Vec<&Vec<u8>> = sent.iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
        let want: Vec<&Vec<u8>> = kept.iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
        assert_eq!(sent_values, want, "{} lost values (first {value:?})", String::from_utf8_lossy(name));
    }
    assert_eq!(sent.len(), kept.len(), "the head sent upstream has the wrong number of headers");
});

/// The `[headers]` section the first two lines describe (defaults elsewhere).
fn configure(prefix: &[u8], list: &[u8]) -> Option<Headers> {
    let mut raw = Headers::default();
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(|s| Spanned::new(0..0, s.trim().to_owned()));
    if !prefix.is_empty() {
        raw.reserved_prefix = text(prefix)?;
    }
    for item in std::str::from_utf8(list).ok()?.split(',').filter(|i| !i.trim().is_empty()) {
        let (key, name) = item.split_once('=').unwrap_or(("", item));
        let slot = match key {
            "environment" => &mut raw.environment,
            "tenant" => &mut raw.tenant,
            "user" => &mut raw.user,
            "roles" => &mut raw.roles,
            "test_account" => &mut raw.test_account,
            "pool" => &mut raw.pool,
            "request_id" => &mut raw.request_id,
            "system_mode" => &mut raw.system_mode,
            "db_schema" => &mut raw.db_schema,
            "db_pool" => &mut raw.db_pool,
            _ => {
                raw.strip.push(Spanned::new(0..0, item.trim().to_owned()));
                continue;
            }
        };
        *slot = Spanned::new(0..0, name.trim().to_owned());
    }
    Some(raw)
}

/// The names of the ten trusted headers.
fn trusted(raw: &Headers) -> impl Iterator<Item = &Spanned<String>> {
    [
        &raw.environment,
        &raw.tenant,
        &raw.user,
        &raw.roles,
        &raw.test_account,
        &raw.pool,
        &raw.request_id,
        &raw.system_mode,
        &raw.db_schema,
        &raw.db_pool,
    ]
    .into_iter()
}

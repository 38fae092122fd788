//! The tenant map file parser (`config::tenant_map::parse`) on any text.
//!
//! Checked: nothing panics; a file is either accepted whole or refused with at least one
//! error, each pointing at a line of the file; an accepted file gives one entry per
//! line that is not blank or a comment, in order, each tenant once, with trimmed,
//! non-empty fields taken from that line and free of `,` and `#`, and the pool's column
//! (in characters) pointing at the pool name.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use isogate::config::tenant_map::parse;
use isogate::config::At;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("tenants.csv");
    let lines: Vec<&str> = text.lines().collect();
    match parse(path, "environments.prod.tenant_map_file", text) {
        Ok(entries) => {
            let meaningful = lines.iter().filter(|l| !l.split('#').next().unwrap_or("").trim().is_empty()).count();
            assert_eq!(entries.len(), meaningful, "entries and mapping lines differ");
            let mut tenants = HashSet::new();
            let mut previous = 0;
            for e in &entries {
                assert!(e.line > previous && e.line <= lines.len(), "line {} out of order", e.line);
                previous = e.line;
                assert!(tenants.insert(e.tenant), "tenant {:?} accepted twice", e.tenant);
                let source = lines[e.line - 1];
                for field in [Some(e.tenant), Some(e.pool), e.plan].into_iter().flatten() {
                    assert!(!field.is_empty() && field == field.trim(), "field {field:?} on line {}", e.line);
                    assert!(!field.contains([',', '#']), "field {field:?} on line {}", e.line);
                    assert!(source.contains(field), "field {field:?} is not on line {}", e.line);
                }
                let at_pool: String = source.chars().skip(e.pool_col - 1).collect();
                assert!(at_pool.starts_with(e.pool), "pool column {} on line {} is not at {:?}", e.pool_col, e.line, e.pool);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for e in &errors {
                match &e.at {
                    At::File { path: p, line, col } => {
                        assert_eq!(p, path);
                        assert!(*line >= 1 && *line <= lines.len() && *col >= 1, "error at {line}:{col}");
                    }
                    other => panic!("error at {other:?}"),
                }
                assert!(!e.problem.is_empty() && !e.fix.is_empty(), "{e:?}");
                let _ = e.render(path, text);
            }
        }
    }
});

//! Tenant map files: one `tenant,pool` or `tenant,pool,plan` line per tenant, `#` comments and blank lines
//! ignored. They may hold a million entries, so the parser streams the text once and
//! reports every bad line with its line and column.

use std::collections::HashMap;
use std::path::Path;

use super::error::{At, ConfigError};

/// One parsed entry: tenant id and the pool name as written, with its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Pool name as written.
    pub pool: &'a str,
    /// 1-based line.
    pub line: usize,
    /// 1-based column of the pool name.
    pub pool_col: usize,
    /// Plan name from the optional third column.
    pub plan: Option<&'a str>,
}

/// Parses `text` (the contents of `path`). Returns the entries, or every problem found.
pub fn parse<'a>(path: &Path, key: &str, text: &'a str) -> Result<Vec<Entry<'a>>, Vec<ConfigError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim_end();
        if content.trim().is_empty() {
            continue;
        }
        let err = |col: usize, problem: String, fix: &str| ConfigError {
            at: At::File { path: path.to_owned(), line, col },
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        let Some((tenant, pool)) = content.split_once(',') else {
            errors.push(err(1, format!("line {line} has no comma"), "write `tenant,pool`"));
            continue;
        };
        let (pool, plan) = match pool.split_once(',') {
            Some((pool, plan)) => (pool, Some(plan.trim())),
            None => (pool, None),
        };
        let (tenant, pool) = (tenant.trim(), pool.trim());
        // The pool name's 1-based column, in characters, past the comma and any spaces.
        let pool_start = content.len() - content[content.find(',').map_or(0, |c| c + 1)..].trim_start().len();
        let pool_col = content[..pool_start].chars().count() + 1;
        if tenant.is_empty() || pool.is_empty() || plan.is_some_and(|p| p.is_empty() || p.contains(',')) {
            errors.push(err(
                1,
                format!("line {line} is not `tenant,pool[,plan]`"),
                "write two or three non-empty fields",
            ));
            continue;
        }
        if let Some(first) = seen.insert(tenant, line) {
            errors.push(err(
                1,
                format!("tenant `{tenant}` is mapped twice (first on line {first})"),
                "keep one line per tenant",
            ));
            continue;
        }
        entries.push(Entry { tenant, pool, line, pool_col, plan });
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_skips_comments() {
        let text = "# tenants\nacme, prod-acme\n\nglobex,prod-shared, premium # big one\n";
        let entries = parse(Path::new("t.csv"), "k", text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].tenant, "acme");
        assert_eq!(entries[0].pool, "prod-acme");
        assert_eq!(entries[0].plan, None);
        assert_eq!(entries[1].line, 4);
        assert_eq!(entries[1].plan, Some("premium"));
    }

    #[test]
    fn the_pool_column_counts_characters_past_the_spaces() {
        let entries = parse(
            Path::new("t.csv"),
            "k",
            "acme, prod-acme
café,  p
x,y
",
        )
        .unwrap();
        let cols: Vec<usize> = entries.iter().map(|e| e.pool_col).collect();
        assert_eq!(cols, [7, 8, 3]);
    }

    #[test]
    fn reports_every_bad_line() {
        let text = "acme\nacme,a\nacme,b\n,x\n";
        let errors = parse(Path::new("t.csv"), "k", text).unwrap_err();
        let lines: Vec<usize> = errors
            .iter()
            .map(|e| match e.at {
                At::File { line, .. } => line,
                _ => 0,
            })
            .collect();
        assert_eq!(lines, vec![1, 3, 4]);
        assert!(errors[1].problem.contains("mapped twice (first on line 2)"));
    }
}

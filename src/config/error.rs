//! `ConfigError`: one problem found in a configuration file, with where it is, the key
//! path, what is wrong and how to fix it. `check` and reload collect all of them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a configuration problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// A byte range in the main configuration file.
    Span(Range<usize>),
    /// A line and column in another file (a tenant map, a key file).
    File {
        /// That file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
    },
    /// Nowhere more precise than the file as a whole.
    Unknown,
}

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is.
    pub at: At,
    /// Dotted key path, e.g. `environments.prod.default_pool`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    /// A problem at a span of the main file.
    pub fn at(span: Range<usize>, key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        let at = if span.is_empty() && span.start == 0 { At::Unknown } else { At::Span(span) };
        Self { at, key: key.into(), problem: problem.into(), fix: fix.into() }
    }

    /// Renders the error as `file:line:col: key: problem (fix: ...)`, resolving spans
    /// against `source`, the text of `path`.
    pub fn render(&self, path: &Path, source: &str) -> String {
        let location = match &self.at {
            At::Span(span) => {
                let (line, col) = line_col(source, span.start);
                format!("{}:{line}:{col}", path.display())
            }
            At::File { path, line, col } => format!("{}:{line}:{col}", path.display()),
            At::Unknown => path.display().to_string(),
        };
        let key = if self.key.is_empty() { String::new() } else { format!(" {}:", self.key) };
        if self.fix.is_empty() {
            format!("{location}:{key} {}", self.problem)
        } else {
            format!("{location}:{key} {}; fix: {}", self.problem, self.fix)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.key, self.problem, self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// A list of problems from one compile, in the order they were found.
pub type ConfigErrors = Vec<ConfigError>;

//! Configuration loading: read the TOML file, parse it into the strict on-disk schema
//! (`file`), and render every problem as `file:line:col: key: problem; fix: ...`.
//!
//! Compilation into the request-path model lives in `snapshot`; this module never
//! looks at sockets or keys.

pub mod error;
pub mod file;
pub mod tenant_map;

use std::path::{Path, PathBuf};

pub use error::{At, ConfigError, ConfigErrors};

/// The text of a configuration file and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path as given by the operator.
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl Source {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the configuration file: {e}", path.display()))?;
        Ok(Self { path: path.to_owned(), text })
    }

    /// Wraps text that did not come from disk (the embedded demo config).
    pub fn embedded(name: &str, text: &str) -> Self {
        Self { path: PathBuf::from(name), text: text.to_owned() }
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Resolves a path written in the file against the file's directory.
    pub fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir().join(p)
        }
    }

    /// Parses the text into the on-disk schema. Syntax errors, type errors and unknown
    /// keys come back as one `ConfigError` pointing at the offending span.
    pub fn parse(&self) -> Result<file::File, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let problem = e.message().trim_end().to_owned();
            let fix = if problem.starts_with("unknown field") {
                "remove the key or correct its spelling (every key is documented in isogate.example.toml)"
            } else if problem.starts_with("invalid type")
                || problem.starts_with("unknown variant")
                || problem.starts_with("missing field")
            {
                "correct the value (every key is documented in isogate.example.toml)"
            } else {
                "fix the TOML syntax at this position"
            };
            ConfigError::at(e.span().unwrap_or(0..0), "", problem, fix)
        })
    }

    /// Renders a list of errors, one per line.
    pub fn render(&self, errors: &[ConfigError]) -> String {
        let mut out = String::new();
        for e in errors {
            out.push_str(&e.render(&self.path, &self.text));
            out.push('\n');
        }
        out
    }
}

/// Looks up an environment variable; injected so tests and the demo need not touch the
/// process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_points_at_its_line_and_names_the_fix() {
        let src = Source::embedded("t.toml", "[admin]\naddress = \"127.0.0.1:1\"\nadress = 1\n");
        let err = src.parse().unwrap_err();
        let rendered = err.render(&src.path, &src.text);
        assert!(rendered.starts_with("t.toml:3:1:"), "{rendered}");
        assert!(rendered.contains("unknown field `adress`"), "{rendered}");
        assert!(rendered.contains("fix:"), "{rendered}");
    }

    #[test]
    fn type_error_points_at_the_value() {
        let src = Source::embedded("t.toml", "[token]\nmax_bytes = \"big\"\n");
        let err = src.parse().unwrap_err();
        let rendered = err.render(&src.path, &src.text);
        assert!(rendered.starts_with("t.toml:2:13:"), "{rendered}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(error::line_col("ab\ncé\nx", 7), (3, 1));
        assert_eq!(error::line_col("ab\ncé\nx", 4), (2, 2));
    }
}

//! Templates rendered from verified identity: `company_{tenant}`, `/buckets/{tenant}`,
//! `documents_{env}`. They are parsed once at compile time; at request time every
//! substituted value must be made of safe characters, so a crafted tenant id cannot
//! escape its slot (injection-safe by construction, not by escaping).

/// A value a template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The bound environment.
    Env,
    /// The tenant claim.
    Tenant,
    /// The user claim.
    Sub,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

/// Values available to a template; `None` when the claim is missing.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// Environment name.
    pub env: &'a str,
    /// Tenant claim.
    pub tenant: Option<&'a str>,
    /// User claim.
    pub sub: Option<&'a str>,
}

/// Rendering failed: a value is missing or holds characters outside the safe set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsafe;

impl Template {
    /// Parses `{env}`, `{tenant}` and `{sub}` placeholders.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].into()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in `{text}`"))? + open;
            let var = match &rest[open + 1..close] {
                "env" => Var::Env,
                "tenant" => Var::Tenant,
                "sub" => Var::Sub,
                other => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}` in `{text}`; use {{env}}, {{tenant}} or {{sub}}"
                    ))
                }
            };
            parts.push(Part::Var(var));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in `{text}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.into()));
        }
        Ok(Self { parts: parts.into() })
    }

    /// Renders the template. Every substituted value must be 1..=64 characters of
    /// `[A-Za-z0-9_-]`; dots and slashes are never accepted from a value.
    pub fn render(&self, values: &Values<'_>) -> Result<String, Unsafe> {
        let mut out = String::with_capacity(64);
        for part in self.parts.iter() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => {
                    let value = match v {
                        Var::Env => Some(values.env),
                        Var::Tenant => values.tenant,
                        Var::Sub => values.sub,
                    }
                    .ok_or(Unsafe)?;
                    if !safe_value(value) {
                        return Err(Unsafe);
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }

    /// Whether the template uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }
}

fn safe_value(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` is a safe schema name: `^[a-z_][a-z0-9_]{0,62}$`.
pub fn valid_schema(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(tenant: &str) -> Values<'_> {
        Values { env: "prod", tenant: Some(tenant), sub: Some("u-1") }
    }

    #[test]
    fn renders_placeholders() {
        let t = Template::parse("company_{tenant}").unwrap();
        assert_eq!(t.render(&values("42")).unwrap(), "company_42");
        let t = Template::parse("/collections/documents_{env}/{sub}").unwrap();
        assert_eq!(t.render(&values("x")).unwrap(), "/collections/documents_prod/u-1");
        assert!(t.uses(Var::Env) && t.uses(Var::Sub) && !t.uses(Var::Tenant));
    }

    #[test]
    fn hostile_values_never_render() {
        let t = Template::parse("company_{tenant}").unwrap();
        for hostile in ["1; DROP TABLE x", "../other", "a/b", "a.b", "ü", "", &"a".repeat(200), "a b", "%2e%2e"] {
            assert_eq!(t.render(&values(hostile)), Err(Unsafe), "{hostile:?}");
        }
        let missing = Values { env: "prod", tenant: None, sub: None };
        assert_eq!(t.render(&missing), Err(Unsafe));
    }

    #[test]
    fn bad_templates_are_config_errors() {
        assert!(Template::parse("company_{tenant").is_err());
        assert!(Template::parse("company_{user}").is_err());
        assert!(Template::parse("company_}x").is_err());
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema("company_42"));
        assert!(valid_schema("_x"));
        assert!(!valid_schema("Company_42"));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("company-42"));
        assert!(!valid_schema(&"a".repeat(64)));
    }
}

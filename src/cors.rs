//! Cross-origin resource sharing per route (Fetch standard, CORS protocol), answered by
//! the gateway before the "identify" stage: a preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) needs no token and never reaches the upstream, and
//! the response headers are the gateway's, on proxied answers and refusals alike.
//!
//! A route with CORS owns its CORS headers: the upstream's `Access-Control-*` headers
//! are removed, so an origin the route does not allow gets none, whatever the app says.

use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::request::Parts;
use pingora::http::ResponseHeader;
use toml::Spanned;

use crate::config::{file, ConfigError};

/// A route's compiled CORS rules.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Allowed origins, lowercase; `None` allows any (never with credentials).
    origins: Option<Box<[Box<str>]>>,
    methods: Box<[http::Method]>,
    methods_value: HeaderValue,
    headers: Box<[HeaderName]>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

const TRUE: HeaderValue = HeaderValue::from_static("true");
const ANY: HeaderValue = HeaderValue::from_static("*");
const PREFLIGHT_VARY: HeaderValue =
    HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers");

/// Whether the request is a CORS preflight.
pub fn is_preflight(head: &Parts) -> bool {
    head.method == http::Method::OPTIONS
        && head.headers.contains_key(ORIGIN)
        && head.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

impl Cors {
    /// Compiles `[routes.cors]` at `key` (`routes[N].cors`).
    pub fn compile(raw: &file::Cors, key: &str, errors: &mut Vec<ConfigError>) -> Self {
        let credentials = *raw.allow_credentials.get_ref();
        let listed = raw.allowed_origins.get_ref();
        let any = listed.iter().any(|o| o.get_ref() == "*");
        if listed.is_empty() || (any && listed.len() > 1) {
            errors.push(ConfigError::at(
                raw.allowed_origins.span(),
                format!("{key}.allowed_origins"),
                "list the allowed origins, or \"*\" alone",
                "e.g. allowed_origins = [\"https://app.example.com\"]",
            ));
        }
        if any && credentials {
            errors.push(ConfigError::at(
                raw.allow_credentials.span(),
                format!("{key}.allow_credentials"),
                "\"*\" cannot be combined with credentials (browsers refuse it)",
                "list the origins that may send credentials, or set allow_credentials = false",
            ));
        }
        for (i, o) in listed.iter().enumerate().filter(|(_, o)| o.get_ref() != "*") {
            if !valid_origin(o.get_ref()) {
                errors.push(ConfigError::at(
                    o.span(),
                    format!("{key}.allowed_origins[{i}]"),
                    format!("`{}` is not an origin", o.get_ref()),
                    "write scheme://host[:port] without a path, e.g. \"https://app.example.com\"",
                ));
            }
        }
        let origins = (!any).then(|| listed.iter().map(|o| o.get_ref().to_ascii_lowercase().into()).collect());
        let methods: Vec<http::Method> = raw
            .allowed_methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid(m, &format!("{key}.allowed_methods[{i}]"), "method", errors))
                    .ok()
            })
            .collect();
        let headers = names(&raw.allowed_headers, &format!("{key}.allowed_headers"), errors);
        let exposed = names(&raw.expose_headers, &format!("{key}.expose_headers"), errors);
        let list = |items: Vec<&str>| HeaderValue::from_str(&items.join(", ")).ok().filter(|v| !v.is_empty());
        Self {
            origins,
            methods_value: list(methods.iter().map(http::Method::as_str).collect())
                .unwrap_or(HeaderValue::from_static("GET")),
            methods: methods.into(),
            headers_value: list(headers.iter().map(HeaderName::as_str).collect()),
            headers: headers.into(),
            expose_value: list(exposed.iter().map(HeaderName::as_str).collect()),
            credentials,
            max_age: HeaderValue::from(raw.max_age_seconds),
        }
    }

    /// The request's origin, when it sends exactly one and the route allows it.
    fn allowed_origin<'h>(&self, head: &'h Parts) -> Option<&'h HeaderValue> {
        let mut all = head.headers.get_all(ORIGIN).iter();
        let origin = all.next().filter(|_| all.next().is_none())?;
        match &self.origins {
            None => Some(origin),
            Some(list) => list.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())).then_some(origin),
        }
    }

    /// Whether a preflight asks for an allowed origin, method and headers.
    pub fn preflight_allowed(&self, head: &Parts) -> bool {
        let mut asked = head.headers.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
        let method = asked.next().filter(|_| asked.next().is_none());
        let method_ok = method.is_some_and(|m| self.methods.iter().any(|x| x.as_str().as_bytes() == m.as_bytes()));
        let headers_ok = head
            .headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty())
            .all(|h| self.headers.iter().any(|x| x.as_str().as_bytes().eq_ignore_ascii_case(h)));
        self.allowed_origin(head).is_some() && method_ok && headers_ok
    }

    /// The headers of an allowed preflight's answer.
    pub fn set_preflight_headers(&self, head: &Parts, resp: &mut ResponseHeader) -> pingora::Result<()> {
        let Some(origin) = self.allowed_origin(head) else { return Ok(()) };
        self.set_origin(origin, resp)?;
        resp.insert_header(ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone())?;
        if let Some(h) = &self.headers_value {
            resp.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, h.clone())?;
        }
        resp.insert_header(ACCESS_CONTROL_MAX_AGE, self.max_age.clone())?;
        resp.append_header(VARY, PREFLIGHT_VARY)?;
        Ok(())
    }

    /// The headers of any other answer: the upstream's `Access-Control-*` removed, then
    /// the route's, when the origin is allowed.
    pub fn set_response_headers(&self, head: &Parts, resp: &mut ResponseHeader) -> pingora::Result<()> {
        let theirs: Vec<HeaderName> =
            resp.headers.keys().filter(|n| n.as_str().starts_with("access-control-")).cloned().collect();
        for name in &theirs {
            resp.remove_header(name);
        }
        resp.append_header(VARY, HeaderValue::from_static("Origin"))?;
        let Some(origin) = self.allowed_origin(head) else { return Ok(()) };
        self.set_origin(origin, resp)?;
        if let Some(e) = &self.expose_value {
            resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone())?;
        }
        Ok(())
    }

    fn set_origin(&self, origin: &HeaderValue, resp: &mut ResponseHeader) -> pingora::Result<()> {
        let allow = if self.origins.is_none() { ANY } else { origin.clone() };
        resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
        if self.credentials {
            resp.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE)?;
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, nothing more (RFC 6454 serialisation).
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
}

fn invalid(value: &Spanned<String>, key: &str, what: &str, errors: &mut Vec<ConfigError>) {
    errors.push(ConfigError::at(
        value.span(),
        key,
        format!("`{}` is not a valid {what}", value.get_ref()),
        format!("write a {what} token such as those in the example configuration"),
    ));
}

fn names(raw: &[Spanned<String>], key: &str, errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, h)| {
            HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid(h, &format!("{key}[{i}]"), "header name", errors))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> (Cors, Vec<ConfigError>) {
        let s = |v: &str| Spanned::new(0..0, v.to_owned());
        let raw = file::Cors {
            allowed_origins: Spanned::new(0..0, origins.iter().map(|o| s(o)).collect()),
            allowed_methods: vec![s("GET"), s("put")],
            allowed_headers: vec![s("Content-Type"), s("authorization")],
            expose_headers: vec![s("x-request-id")],
            allow_credentials: Spanned::new(0..0, credentials),
            max_age_seconds: 600,
        };
        let mut errors = Vec::new();
        (Cors::compile(&raw, "routes[0].cors", &mut errors), errors)
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Parts {
        let mut b = http::Request::builder()
            .method("OPTIONS")
            .uri("/api")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn preflights_check_origin_method_and_headers() {
        let (c, errors) = cors(&["https://app.example.com"], true);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(is_preflight(&preflight("https://app.example.com", "PUT", None)));
        assert!(c.preflight_allowed(&preflight("https://APP.example.com", "PUT", Some("content-type, Authorization"))));
        assert!(!c.preflight_allowed(&preflight("https://evil.example.com", "PUT", None)));
        assert!(!c.preflight_allowed(&preflight("https://app.example.com", "DELETE", None)));
        assert!(!c.preflight_allowed(&preflight("https://app.example.com", "GET", Some("x-secret"))));
    }

    #[test]
    fn any_origin_answers_a_star_and_refuses_credentials() {
        let (c, errors) = cors(&["*"], false);
        assert!(errors.is_empty());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("access-control-allow-origin", "https://upstream.example").unwrap();
        c.set_response_headers(&preflight("https://x.example", "GET", None), &mut resp).unwrap();
        assert_eq!(resp.headers["access-control-allow-origin"], "*");
        assert!(resp.headers.get("access-control-allow-credentials").is_none());
        let (_, errors) = cors(&["*"], true);
        assert_eq!(errors[0].key, "routes[0].cors.allow_credentials");
        let (_, errors) = cors(&["https://a.example/path", "*"], false);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn a_foreign_origin_gets_no_cors_header_at_all() {
        let (c, _) = cors(&["https://app.example.com"], true);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("access-control-allow-origin", "*").unwrap();
        c.set_response_headers(&preflight("https://evil.example", "GET", None), &mut resp).unwrap();
        assert!(resp.headers.keys().all(|n| !n.as_str().starts_with("access-control-")), "{resp:?}");
        assert_eq!(resp.headers["vary"], "Origin");
    }
}

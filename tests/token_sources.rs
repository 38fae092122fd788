//! Token sources per issuer and per route over real sockets: a cookie accepted for the
//! issuer that lists it and refused for one that does not, a route's own list replacing
//! the issuers', and a token cookie forwarded only where the route says so.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::jws::{claims, token};
use common::*;

fn config(ups: &Upstreams) -> String {
    format!(
        r#"{PREAMBLE}
{HMAC_ISSUER}
token_sources = ["authorization", {{ cookie = "session" }}]
{RSA_ISSUER}
[environments.prod]
default_pool = "app"

[pools.app]
servers = ["{app}"]

[[routes]]
name = "cookie-only"
path_prefix = "/cookie-only"
environment = "prod"
token_sources = [{{ cookie = "sid" }}]
forward_token_cookie = true

[[routes]]
name = "app"
path_prefix = "/"
environment = "prod"
"#,
        app = ups.get("app").addr
    )
}

#[test]
fn a_cookie_counts_only_for_the_issuers_and_routes_that_list_it() {
    let ups = Upstreams::start(&["app"]);
    let gw = Gateway::start(&config(&ups), &[]);
    let (hmac, rsa) = (token("HS256", claims("prod", "acme")), token("RS256", claims("prod", "globex")));
    let app = ups.get("app");

    let ok = gw.get("prod.test", "/a", &[("cookie", &format!("session={hmac}; lang=en"))]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let seen = app.received().pop().unwrap();
    assert_eq!((seen.header("x-isogate-tenant"), seen.header("cookie")), (Some("acme"), Some("lang=en")));

    let wrong_issuer = gw.get("prod.test", "/a", &[("cookie", &format!("session={rsa}"))]);
    assert_eq!((wrong_issuer.status, wrong_issuer.json()["error"].as_str()), (401, Some("token_source_not_allowed")));
    let header = gw.get_with_token("prod.test", "/a", &rsa);
    assert_eq!(header.status, 200, "the RSA issuer keeps its header");

    // The route's own list replaces the issuers': only its cookie counts, and goes on.
    let by_header = gw.get_with_token("prod.test", "/cookie-only", &hmac);
    assert_eq!((by_header.status, by_header.json()["error"].as_str()), (401, Some("token_missing")));
    let by_cookie = gw.get("prod.test", "/cookie-only", &[("cookie", &format!("sid={rsa}"))]);
    assert_eq!(by_cookie.status, 200, "{by_cookie:?}");
    let seen = app.received().pop().unwrap();
    assert_eq!(seen.header("x-isogate-tenant"), Some("globex"));
    assert_eq!(seen.header("cookie"), Some(format!("sid={rsa}").as_str()), "forward_token_cookie keeps it");
    // A cookie that is not a compact JWS is refused before any verification, also
    // when a verified token is cached and the junk merely starts with it.
    for junk in ["<script>".to_owned(), format!("{hmac}<"), format!("{hmac}%2E")] {
        let r = gw.get("prod.test", "/a", &[("cookie", &format!("session={junk}"))]);
        assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("token_malformed")), "{junk}");
    }
    assert_eq!(app.count(), 3, "no refused request reached the upstream");
}

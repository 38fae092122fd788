use super::*;

const T1: &str = "aGVhZA.cGF5bG9hZA.c2ln";
const T2: &str = "aGVhZA.b3RoZXI.c2ln";

fn sources(list: &[file::TokenSource]) -> TokenSources {
    let mut errors = Vec::new();
    let s = TokenSources::compile(&Spanned::new(0..0, list.to_vec()), "routes[0].token_sources", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    s
}

fn all() -> TokenSources {
    sources(&[
        file::TokenSource::Authorization,
        file::TokenSource::Cookie("session".into()),
        file::TokenSource::Query("access_token".into()),
        file::TokenSource::Subprotocol("bearer".into()),
    ])
}

fn head(uri: &str, headers: &[(&str, String)]) -> Parts {
    let mut b = http::Request::builder().uri(uri);
    for (n, v) in headers {
        b = b.header(*n, v.as_str());
    }
    b.body(()).unwrap().into_parts().0
}

fn found(h: &Parts, websocket: bool) -> Result<(String, Source), AuthError> {
    let s = all();
    s.find(h, websocket, 1000).map(|f| (f.token.into_owned(), f.source.clone()))
}

#[test]
fn each_source_yields_its_token() {
    let bearer = head("/", &[("authorization", format!("Bearer {T1}"))]);
    assert_eq!(found(&bearer, false), Ok((T1.into(), Source::Authorization)));
    let cookie = head("/", &[("cookie", format!("theme=dark; session=\"{T1}\"; x=1"))]);
    assert_eq!(found(&cookie, false), Ok((T1.into(), Source::Cookie("session".into()))));
    let query = head(&format!("/ws?a=1&access%5Ftoken={T1}"), &[]);
    assert_eq!(found(&query, true), Ok((T1.into(), Source::Query("access_token".into()))));
    let proto = head("/ws", &[("sec-websocket-protocol", format!("chat, bearer, {T1}"))]);
    let marker = Source::Subprotocol(HeaderValue::from_static("bearer"));
    assert_eq!(found(&proto, true), Ok((T1.into(), marker)));
}

#[test]
fn query_and_subprotocol_count_on_upgrades_only() {
    let query = head(&format!("/ws?access_token={T1}"), &[]);
    assert_eq!(found(&query, false), Err(AuthError::Missing));
    let proto = head("/ws", &[("sec-websocket-protocol", format!("bearer, {T1}"))]);
    assert_eq!(found(&proto, false), Err(AuthError::Missing));
}

#[test]
fn two_different_tokens_conflict_and_the_same_twice_does_not() {
    let two = head(&format!("/ws?access_token={T2}"), &[("authorization", format!("Bearer {T1}"))]);
    assert_eq!(found(&two, true), Err(AuthError::Conflicting));
    let same = head(&format!("/ws?access_token={T1}"), &[("cookie", format!("session={T1}"))]);
    assert_eq!(found(&same, true), Ok((T1.into(), Source::Cookie("session".into()))));
    let markers = head("/ws", &[("sec-websocket-protocol", format!("bearer, {T1}, chat, bearer, {T2}"))]);
    assert_eq!(found(&markers, true), Err(AuthError::Conflicting));
    let cookies = head("/", &[("cookie", format!("session={T1}")), ("cookie", format!("session={T2}"))]);
    assert_eq!(found(&cookies, false), Err(AuthError::Conflicting));
}

#[test]
fn hostile_values_are_refused() {
    let marker_alone = head("/ws", &[("sec-websocket-protocol", "bearer".to_owned())]);
    assert_eq!(found(&marker_alone, true), Err(AuthError::Malformed));
    // Found as it is, then refused before verification (`Authenticator::verify`).
    let junk = head("/", &[("cookie", "session=<script>".to_owned())]);
    assert_eq!(found(&junk, false).map(|(t, _)| crate::auth::token::well_formed(&t)), Ok(false));
    let big = head(&format!("/ws?access_token={}", "a".repeat(2000)), &[]);
    assert_eq!(found(&big, true), Err(AuthError::TooLarge));
}

#[test]
fn strip_removes_every_token_source_but_the_header() {
    let mut req = RequestHeader::build("GET", format!("/ws?a=1&access_token={T1}&b=2").as_bytes(), None).unwrap();
    req.append_header("cookie", format!("theme=dark; session={T1}")).unwrap();
    req.append_header("sec-websocket-protocol", format!("bearer, {T1}, chat.v1")).unwrap();
    req.append_header("authorization", format!("Bearer {T1}")).unwrap();
    all().strip(&mut req, false).unwrap();
    assert_eq!(req.uri.to_string(), "/ws?a=1&b=2");
    assert_eq!(req.headers["cookie"], "theme=dark");
    assert_eq!(req.headers["sec-websocket-protocol"], "chat.v1");
    assert!(req.headers.contains_key("authorization"));

    let mut twice = RequestHeader::build("GET", b"/ws", None).unwrap();
    twice.append_header("sec-websocket-protocol", format!("bearer, {T1}, chat")).unwrap();
    twice.append_header("sec-websocket-protocol", format!("bearer, {T2}")).unwrap();
    all().strip(&mut twice, false).unwrap();
    assert_eq!(twice.headers["sec-websocket-protocol"], "chat");

    let mut only = RequestHeader::build("GET", format!("/ws?access_token={T1}").as_bytes(), None).unwrap();
    only.append_header("cookie", format!("session={T1}")).unwrap();
    only.append_header("sec-websocket-protocol", format!("bearer,{T1}")).unwrap();
    all().strip(&mut only, false).unwrap();
    assert_eq!(only.uri.to_string(), "/ws");
    assert!(!only.headers.contains_key("cookie") && !only.headers.contains_key("sec-websocket-protocol"));

    let mut kept = RequestHeader::build("GET", b"/", None).unwrap();
    kept.append_header("cookie", format!("session={T1}")).unwrap();
    all().strip(&mut kept, true).unwrap();
    assert_eq!(kept.headers["cookie"], format!("session={T1}").as_str());
}

#[test]
fn the_marker_is_answered_when_the_upstream_picks_no_subprotocol() {
    let client = head("/ws", &[("sec-websocket-protocol", format!("bearer, {T1}"))]);
    let mut resp = ResponseHeader::build(101, None).unwrap();
    all().answer_subprotocol(&client, &mut resp).unwrap();
    assert_eq!(resp.headers["sec-websocket-protocol"], "bearer");
    let mut chosen = ResponseHeader::build(101, None).unwrap();
    chosen.insert_header("sec-websocket-protocol", "chat.v1").unwrap();
    all().answer_subprotocol(&client, &mut chosen).unwrap();
    assert_eq!(chosen.headers["sec-websocket-protocol"], "chat.v1");
    let plain = head("/ws", &[]);
    let mut none = ResponseHeader::build(101, None).unwrap();
    all().answer_subprotocol(&plain, &mut none).unwrap();
    assert!(!none.headers.contains_key("sec-websocket-protocol"));
}

#[test]
fn lists_are_checked_when_compiled() {
    let mut errors = Vec::new();
    let raw = vec![
        file::TokenSource::Cookie("a b".into()),
        file::TokenSource::Authorization,
        file::TokenSource::Authorization,
    ];
    TokenSources::compile(&Spanned::new(0..0, raw), "issuers[0].token_sources", &mut errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].key, "issuers[0].token_sources[0]");
    TokenSources::compile(&Spanned::new(0..0, vec![]), "k", &mut errors);
    assert_eq!(errors.len(), 3);
}

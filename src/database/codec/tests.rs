use super::*;

fn startup(version: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (n, v) in pairs {
        body.extend_from_slice(n.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    body
}

#[test]
fn a_startup_message_gives_its_parameters() {
    let body = startup(PROTOCOL_3_0, &[("user", "alice"), ("database", "app")]);
    let Ok(Startup::Start(params)) = parse_startup(&body) else { panic!("not a startup message") };
    assert_eq!(params.minor, 0);
    assert_eq!(params.get("user"), Some("alice"));
    assert_eq!(params.get("database"), Some("app"));
    assert_eq!(params.get("options"), None);
}

#[test]
fn requests_are_told_apart_by_their_code() {
    assert_eq!(parse_startup(&SSL_REQUEST.to_be_bytes()), Ok(Startup::SslRequest));
    assert_eq!(parse_startup(&GSSENC_REQUEST.to_be_bytes()), Ok(Startup::GssEncRequest));
    let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
    cancel.extend_from_slice(&5i32.to_be_bytes());
    cancel.extend_from_slice(&(-6i32).to_be_bytes());
    assert_eq!(parse_startup(&cancel), Ok(Startup::Cancel(BackendKey { pid: 5, secret: -6 })));
    assert_eq!(&cancel_request(BackendKey { pid: 5, secret: -6 })[4..], &cancel[..]);
}

#[test]
fn hostile_packets_are_refused() {
    assert_eq!(startup_length(7u32.to_be_bytes()), Err(StartupError::BadLength));
    assert_eq!(startup_length(10_001u32.to_be_bytes()), Err(StartupError::BadLength));
    assert_eq!(startup_length(u32::MAX.to_be_bytes()), Err(StartupError::BadLength));
    assert_eq!(startup_length(10_000u32.to_be_bytes()), Ok(9_996));
    // Protocol 2.0 and an unknown code.
    assert_eq!(parse_startup(&startup(2 << 16, &[("user", "a")])), Err(StartupError::UnsupportedProtocol));
    assert_eq!(parse_startup(&1234u32.to_be_bytes()), Err(StartupError::UnsupportedProtocol));
    // Truncated: no final NUL, a name without value, a short cancel request.
    let mut body = startup(PROTOCOL_3_0, &[("user", "a")]);
    body.pop();
    assert_eq!(parse_startup(&body), Err(StartupError::Truncated));
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0");
    assert_eq!(parse_startup(&body), Err(StartupError::Truncated));
    assert_eq!(parse_startup(&CANCEL_REQUEST.to_be_bytes()), Err(StartupError::Truncated));
    assert_eq!(parse_startup(&[0, 3]), Err(StartupError::Truncated));
    // Repeated, empty-named or non-UTF-8 parameters; too many.
    assert_eq!(
        parse_startup(&startup(PROTOCOL_3_0, &[("user", "a"), ("user", "b")])),
        Err(StartupError::BadParameters)
    );
    assert_eq!(parse_startup(&startup(PROTOCOL_3_0, &[("", "a")])), Err(StartupError::BadParameters));
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0\xff\0\0");
    assert_eq!(parse_startup(&body), Err(StartupError::BadParameters));
    let names: Vec<String> = (0..=MAX_STARTUP_PARAMETERS).map(|i| format!("p{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(parse_startup(&startup(PROTOCOL_3_0, &pairs)), Err(StartupError::BadParameters));
}

#[test]
fn the_access_reason_comes_from_options_or_application_name() {
    let reason = |pairs: &[(&str, &str)]| {
        let Ok(Startup::Start(p)) = parse_startup(&startup(PROTOCOL_3_0, pairs)) else { panic!() };
        p.access_reason().map(|r| r.into_owned())
    };
    assert_eq!(reason(&[("options", "-c isogate.reason=ticket-42")]).as_deref(), Some("ticket-42"));
    assert_eq!(
        reason(&[("options", "-c isogate.reason=fix\\ ticket\\ 42 -c work_mem=64MB")]).as_deref(),
        Some("fix ticket 42")
    );
    assert_eq!(reason(&[("application_name", "reason: incident 7")]).as_deref(), Some("incident 7"));
    assert_eq!(reason(&[("application_name", "psql")]), None);
    assert_eq!(reason(&[("options", "-c isogate.reason=")]), None);
}

#[test]
fn backend_messages_are_framed_with_their_length() {
    let mut out = Vec::new();
    fatal(&mut out, "28P01", "bad token", "use a fresh one");
    assert_eq!(out[0], b'E');
    assert_eq!(u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize, out.len() - 1);
    assert!(out.windows(6).any(|w| w == b"C28P01"));
    assert_eq!(out.last(), Some(&0));
    let mut out = Vec::new();
    ready_for_query(&mut out);
    assert_eq!(out, b"Z\0\0\0\x05I");
    assert_eq!(message_header([b'X', 0, 0, 0, 4]), Ok((b'X', 0)));
    assert_eq!(message_header([b'Q', 0, 0, 0, 3]), Err(StartupError::BadLength));
    assert_eq!(password(b"tok\0"), Some(&b"tok"[..]));
    assert_eq!(password(b"tok"), None);
    assert_eq!(password(b"t\0k\0"), None);
}

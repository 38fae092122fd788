use super::*;
use toml::Spanned;

fn policy(trusted: &[&str]) -> ForwardedPolicy {
    let trusted_proxies = trusted.iter().map(|t| Spanned::new(0..0, (*t).to_owned())).collect();
    let raw = file::Forwarded { trusted_proxies, ..Default::default() };
    let mut errors = Vec::new();
    let p = ForwardedPolicy::compile(&raw, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    p
}

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    for (n, v) in headers {
        req.append_header(n.to_string(), *v).unwrap();
    }
    req
}

fn conn(peer: &str, tls: bool) -> Connection {
    Connection { local: None, peer: Some(peer.parse().unwrap()), tls }
}

fn header(req: &RequestHeader, name: &str) -> Vec<String> {
    req.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

const SPOOFED: [(&str, &str); 8] = [
    ("x-forwarded-for", "10.0.0.1"),
    ("X-Forwarded-For", "127.0.0.1"),
    ("x_forwarded_for", "10.9.9.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "admin.internal"),
    ("x-real-ip", "10.0.0.1"),
    ("forwarded", "for=10.0.0.1;proto=https"),
    ("true-client-ip", "10.0.0.1"),
];

#[test]
fn an_untrusted_client_cannot_supply_any_address() {
    let mut req = request(&SPOOFED);
    policy(&["10.0.0.0/8"])
        .apply(&mut req, &conn("203.0.113.9", false), Some(&HeaderValue::from_static("api.example.com")))
        .unwrap();
    assert_eq!(header(&req, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(header(&req, "x-real-ip"), ["203.0.113.9"]);
    assert_eq!(header(&req, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&req, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(header(&req, "forwarded"), ["for=203.0.113.9;proto=http;host=\"api.example.com\""]);
    assert!(header(&req, "x_forwarded_for").is_empty());
    assert!(header(&req, "true-client-ip").is_empty());
}

#[test]
fn a_trusted_proxy_chain_is_kept_and_extended() {
    let mut req = request(&[
        ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
        ("forwarded", "for=198.51.100.7;proto=https"),
        ("x-real-ip", "6.6.6.6"),
    ]);
    policy(&["10.0.0.0/8"])
        .apply(&mut req, &conn("10.2.2.2", false), Some(&HeaderValue::from_static("api.internal")))
        .unwrap();
    assert_eq!(header(&req, "x-forwarded-for"), ["198.51.100.7, 10.1.1.1, 10.2.2.2"]);
    assert_eq!(header(&req, "x-real-ip"), ["198.51.100.7"], "rightmost address that is not a trusted proxy");
    assert_eq!(header(&req, "x-forwarded-proto"), ["https"]);
    assert_eq!(header(&req, "x-forwarded-host"), ["shop.example.com"]);
    assert_eq!(
        header(&req, "forwarded"),
        ["for=198.51.100.7;proto=https, for=10.2.2.2;proto=http;host=\"api.internal\""]
    );
    assert!(header(&req, "x_forwarded_for").is_empty(), "underscore spellings never pass");
}

#[test]
fn spoofed_hops_left_of_the_first_untrusted_address_do_not_count() {
    let p = policy(&["10.0.0.0/8"]);
    let peer: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(p.client_of("1.1.1.1, 203.0.113.9, 10.0.0.4", peer), "203.0.113.9".parse::<IpAddr>().unwrap());
    assert_eq!(p.client_of("garbage, 10.0.0.4", peer), "10.0.0.4".parse::<IpAddr>().unwrap());
}

#[test]
fn ipv6_peers_are_quoted_in_forwarded_and_mapped_addresses_match_v4_ranges() {
    let mut req = request(&[]);
    policy(&[]).apply(&mut req, &conn("2001:db8::1", true), None).unwrap();
    assert_eq!(header(&req, "forwarded"), ["for=\"[2001:db8::1]\";proto=https"]);
    assert_eq!(header(&req, "x-forwarded-proto"), ["https"]);
    assert!(header(&req, "x-forwarded-host").is_empty());
    assert!(policy(&["192.0.2.0/24"]).trusts("::ffff:192.0.2.7".parse().unwrap()));
}

#[test]
fn bad_entries_are_config_errors() {
    let raw = file::Forwarded {
        trusted_proxies: vec![Spanned::new(0..0, "10.0.0.0/33".to_owned())],
        set: vec![Spanned::new(0..0, "x-forwarded-port".to_owned())],
    };
    let mut errors = Vec::new();
    ForwardedPolicy::compile(&raw, &mut errors);
    assert_eq!(errors.len(), 2);
}

#[test]
fn only_the_listed_headers_are_set_but_every_client_copy_goes() {
    let raw = file::Forwarded { set: vec![Spanned::new(0..0, "X-Forwarded-For".to_owned())], ..Default::default() };
    let mut errors = Vec::new();
    let p = ForwardedPolicy::compile(&raw, &mut errors);
    let mut req = request(&SPOOFED);
    p.apply(&mut req, &conn("203.0.113.9", false), Some(&HeaderValue::from_static("a.example"))).unwrap();
    assert_eq!(header(&req, "x-forwarded-for"), ["203.0.113.9"]);
    for name in ["x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded", "true-client-ip"] {
        assert!(header(&req, name).is_empty(), "{name}");
    }
}

#[test]
fn values_made_for_one_peer_are_never_given_to_another_request_that_differs() {
    let policy = policy(&["10.0.0.0/8"]);
    let host = |h: &'static str| Some(HeaderValue::from_static(h));
    // One thread, as a worker serves requests: each differs from the one before in one fact.
    let steps: [(&str, bool, Option<HeaderValue>, &str, &str); 9] = [
        ("203.0.113.9", false, host("a.example"), "203.0.113.9", "for=203.0.113.9;proto=http;host=\"a.example\""),
        ("203.0.113.9", false, host("b.example"), "203.0.113.9", "for=203.0.113.9;proto=http;host=\"b.example\""),
        ("203.0.113.9", true, host("b.example"), "203.0.113.9", "for=203.0.113.9;proto=https;host=\"b.example\""),
        ("203.0.113.9", true, None, "203.0.113.9", "for=203.0.113.9;proto=https"),
        ("203.0.113.9", true, host(""), "203.0.113.9", "for=203.0.113.9;proto=https;host=\"\""),
        ("203.0.113.9", true, None, "203.0.113.9", "for=203.0.113.9;proto=https"),
        ("198.51.100.1", true, None, "198.51.100.1", "for=198.51.100.1;proto=https"),
        ("2001:db8::1", true, None, "2001:db8::1", "for=\"[2001:db8::1]\";proto=https"),
        ("203.0.113.9", false, host("a.example"), "203.0.113.9", "for=203.0.113.9;proto=http;host=\"a.example\""),
    ];
    for _ in 0..2 {
        for (peer, tls, host, xff, forwarded) in &steps {
            let mut req = request(&SPOOFED);
            policy.apply(&mut req, &conn(peer, *tls), host.as_ref()).unwrap();
            assert_eq!(header(&req, "x-forwarded-for"), [*xff], "{peer} {tls} {host:?}");
            assert_eq!(header(&req, "x-real-ip"), [*xff], "{peer} {tls} {host:?}");
            assert_eq!(header(&req, "forwarded"), [*forwarded], "{peer} {tls} {host:?}");
        }
    }
}

#[test]
fn every_address_header_is_known_in_both_spellings_and_nothing_near_it_is() {
    for (i, name) in ADDRESS_HEADERS.iter().enumerate() {
        assert_eq!(address_header(name), Some(i < CHAIN_HEADERS), "{name}");
        if name.contains('-') {
            assert_eq!(address_header(&name.replace('-', "_")), Some(false), "{name}");
        }
        assert_eq!(address_header(&format!("{name}s")), None, "{name}");
        assert_eq!(address_header(&name[1..]), None, "{name}");
        assert_eq!(
            address_header(&name.replace('o', "0")),
            if name.contains('o') { None } else { Some(i < CHAIN_HEADERS) }
        );
    }
    for other in ["", "host", "x-forwarded", "x-forwarded-for-x", &"x".repeat(40), "accept-encoding"] {
        assert_eq!(address_header(other), None, "{other}");
    }
}

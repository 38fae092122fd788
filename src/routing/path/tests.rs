use super::*;

fn forward(raw: &str) -> Result<String, Ambiguous> {
    normalize(raw).map(|p| p.forward.into_owned())
}

fn matching(raw: &str) -> Result<String, Ambiguous> {
    normalize(raw).map(|p| p.matching.into_owned())
}

#[test]
fn normal_paths_are_borrowed_unchanged() {
    for p in ["/", "/api", "/api/", "/api/v1/users", "/a%20b", "/.well-known/x", "/a..b/c", "/100%25"] {
        let n = normalize(p).unwrap();
        assert!(matches!(n.forward, Cow::Borrowed(_)), "{p}");
        assert!(matches!(n.matching, Cow::Borrowed(_)), "{p}");
        assert!(!n.has_parameters());
    }
}

#[test]
fn dot_segments_and_slashes_are_resolved() {
    let cases = [
        ("//admin", "/admin"),
        ("/api//../admin", "/admin"),
        ("/api/./x", "/api/x"),
        ("/api/x/..", "/api/"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/api/%2E%2e/admin/", "/admin/"),
        ("/api/.%2e/admin", "/admin"),
        ("/a/b/../../c", "/c"),
        ("/a/.", "/a/"),
    ];
    for (raw, want) in cases {
        assert_eq!(forward(raw).unwrap(), want, "{raw}");
        assert_eq!(matching(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn escaped_unreserved_characters_are_decoded() {
    assert_eq!(forward("/%61dmin/x").unwrap(), "/admin/x");
    assert_eq!(forward("/adm%69n/%7Euser").unwrap(), "/admin/~user");
    assert_eq!(forward("/a%20b/%61").unwrap(), "/a%20b/a", "reserved and other escapes stay");
    assert_eq!(forward("/api/%2E%2e/%61dmin").unwrap(), "/admin");
}

#[test]
fn segment_parameters_are_matched_without_them() {
    let cases = [
        ("/prod/admin;x=1/x", "/prod/admin;x=1/x", "/prod/admin/x"),
        ("/prod/admin%3Bx=1/x", "/prod/admin%3Bx=1/x", "/prod/admin/x"),
        ("/a;v=1", "/a;v=1", "/a"),
        ("/a/;x/admin", "/a/;x/admin", "/a/admin"),
        ("/a/b;x/../admin", "/a/admin", "/a/admin"),
        ("/a/;x", "/a/;x", "/a/"),
    ];
    for (raw, fwd, mat) in cases {
        let n = normalize(raw).unwrap();
        assert_eq!((&*n.forward, &*n.matching), (fwd, mat), "{raw}");
        assert_eq!(n.has_parameters(), fwd != mat, "{raw}");
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    for p in [
        "/api%2fadmin",
        "/api%2Fadmin",
        "/a%5cb",
        "/a\\b",
        "/a%00",
        "/..",
        "/a/../..",
        "/%2e%2e/x",
        "/a%2",
        "/a%zz",
        "*",
        "admin",
        // dot segments with parameters
        "/prod/zz/..;/admin/x",
        "/prod/.;x/admin",
        "/prod/%2e%2e;/admin",
        "/prod/..%3b/admin",
        // doubly encoded separators, dots, semicolons and NUL
        "/prod/x%252f..%252fadmin/x",
        "/prod/%252e%252e/prod/admin/x",
        "/prod/a%255cb",
        "/prod/admin%253bx/y",
        "/prod/a%2500",
        "/prod/%25%32%66admin",
        "/%2561dmin/x",
        "/prod/a%2520b",
    ] {
        assert_eq!(normalize(p), Err(Ambiguous), "{p}");
    }
}

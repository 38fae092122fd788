use super::*;

fn parse(input: &[u8]) -> Result<ClientResponse<'_>, SaslError> {
    client_response(input)
}

#[test]
fn a_bearer_token_is_taken_from_the_auth_pair() {
    assert_eq!(parse(b"n,,\x01auth=Bearer abc.def-_\x01\x01"), Ok(ClientResponse::Token(b"abc.def-_")));
    // The scheme is case-insensitive, extra spaces are skipped, `y` is accepted, and
    // unknown pairs (host, port) are ignored.
    assert_eq!(
        parse(b"y,,\x01host=db.test\x01port=6432\x01auth=bEaReR   t0k\x01\x01"),
        Ok(ClientResponse::Token(b"t0k"))
    );
    // Another scheme gives no token, which verification then refuses.
    assert_eq!(parse(b"n,,\x01auth=Basic dXNlcg==\x01\x01"), Ok(ClientResponse::Token(b"")));
}

#[test]
fn an_empty_auth_value_asks_for_discovery() {
    assert_eq!(parse(b"n,,\x01auth=\x01\x01"), Ok(ClientResponse::Discovery));
}

#[test]
fn malformed_responses_are_refused_with_their_reason() {
    let cases: [(&[u8], SaslError); 14] = [
        (b"", SaslError::Empty),
        (b"x,,\x01auth=Bearer t\x01\x01", SaslError::Gs2Header),
        (b"n\x01auth=Bearer t\x01\x01", SaslError::Gs2Header),
        (b"p=tls-unique,,\x01auth=Bearer t\x01\x01", SaslError::ChannelBinding),
        (b"n,a=someone,\x01auth=Bearer t\x01\x01", SaslError::AuthorizationIdentity),
        (b"n,x,\x01auth=Bearer t\x01\x01", SaslError::Gs2Header),
        (b"n,,auth=Bearer t\x01\x01", SaslError::Separator),
        (b"n,,\x01auth=Bearer t\x01", SaslError::Separator),
        (b"n,,\x01auth=Bearer t", SaslError::Separator),
        (b"n,,\x01=x\x01auth=Bearer t\x01\x01", SaslError::Pair),
        (b"n,,\x01au th=x\x01\x01", SaslError::Pair),
        (b"n,,\x01auth=Bearer t\x00\x01\x01", SaslError::Pair),
        (b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01", SaslError::Auth),
        (b"n,,\x01auth=Bearer t\x01\x01extra", SaslError::Trailing),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input), Err(want), "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(parse(b"n,,\x01host=h\x01\x01"), Err(SaslError::Auth));
    assert_eq!(parse(b"n,,\x01novalue\x01\x01"), Err(SaslError::Pair));
}

#[test]
fn the_initial_response_is_split_from_its_mechanism() {
    let mut body = b"OAUTHBEARER\0".to_vec();
    body.extend_from_slice(&5i32.to_be_bytes());
    body.extend_from_slice(b"n,,\x01\x01");
    assert_eq!(initial_response(&body), Ok((MECHANISM, Some(&b"n,,\x01\x01"[..]))));
    let mut none = b"OAUTHBEARER\0".to_vec();
    none.extend_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(initial_response(&none), Ok((MECHANISM, None)));
    // A length that disagrees with the data, a missing length, a missing NUL.
    let mut short = b"SCRAM-SHA-256\0".to_vec();
    short.extend_from_slice(&9i32.to_be_bytes());
    short.extend_from_slice(b"abc");
    assert_eq!(initial_response(&short), Err(SaslError::Framing));
    assert_eq!(initial_response(b"OAUTHBEARER\0\0\0"), Err(SaslError::Framing));
    assert_eq!(initial_response(b"OAUTHBEARER"), Err(SaslError::Framing));
    none.push(b'x');
    assert_eq!(initial_response(&none), Err(SaslError::Framing));
}

#[test]
fn server_messages_are_framed_as_postgresql_sends_them() {
    let mut out = Vec::new();
    authentication_sasl(&mut out);
    assert_eq!(out, b"R\0\0\0\x15\0\0\0\x0aOAUTHBEARER\0\0");
    out.clear();
    authentication_sasl_continue(&mut out, br#"{"status":"invalid_token"}"#);
    assert_eq!(&out[..9], b"R\0\0\0\x22\0\0\0\x0b");
    assert_eq!(&out[9..], br#"{"status":"invalid_token"}"#);
    assert_eq!(acknowledgement(b"\x01"), Ok(()));
    assert_eq!(acknowledgement(b"\x01\x01"), Err(SaslError::Acknowledgement));
    assert_eq!(acknowledgement(b""), Err(SaslError::Acknowledgement));
}

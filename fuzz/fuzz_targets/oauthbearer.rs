//! The database front's SASL OAUTHBEARER parser: `codec::oauthbearer::initial_response`
//! on the input as the body of a `SASLInitialResponse`, `client_response` on the
//! initial response it carries and on the whole input, and `acknowledgement`.
//!
//! Checked: nothing panics; an accepted `SASLInitialResponse` is exactly the mechanism,
//! its NUL, the length word and that many bytes (or -1 and nothing); an accepted client
//! response opens with `n,,` or `y,,` and `0x01`, closes with `0x01 0x01`, holds exactly
//! one `auth=` pair, and the token it returns appears in the input, holds only the
//! value characters RFC 7628 allows and does not start with a space; a discovery request
//! has an empty `auth=`; the acknowledgement is accepted only as the single byte `0x01`.
#![no_main]

use isogate::database::codec::oauthbearer::{self, ClientResponse, KVSEP};
use libfuzzer_sys::fuzz_target;

fn check_client_response(input: &[u8]) {
    let Ok(response) = oauthbearer::client_response(input) else { return };
    assert!(input.starts_with(b"n,,\x01") || input.starts_with(b"y,,\x01"), "GS2 header");
    assert!(input.ends_with(&[KVSEP, KVSEP]), "closed by two separators");
    let auth_pairs = input.windows(6).filter(|w| *w == b"\x01auth=").count();
    assert_eq!(auth_pairs, 1, "exactly one auth pair");
    match response {
        ClientResponse::Token(token) => {
            assert!(token.iter().all(|b| matches!(b, 0x21..=0x7E | b' ' | b'\t' | b'\r' | b'\n')));
            assert!(token.first() != Some(&b' '), "spaces after the scheme are skipped");
            assert!(token.is_empty() || input.windows(token.len()).any(|w| w == token), "a token from nowhere");
        }
        ClientResponse::Discovery => {
            assert!(input.windows(7).any(|w| w == b"\x01auth=\x01"), "discovery without an empty auth");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((mechanism, initial)) = oauthbearer::initial_response(data) {
        assert!(!mechanism.contains(&0));
        let framed = mechanism.len() + 1 + 4 + initial.map_or(0, <[u8]>::len);
        assert_eq!(framed, data.len(), "nothing dropped or invented");
        if let Some(initial) = initial {
            check_client_response(initial);
        } else {
            assert_eq!(&data[mechanism.len() + 1..], &[0xff; 4]);
        }
    }
    check_client_response(data);
    assert_eq!(oauthbearer::acknowledgement(data).is_ok(), data == [KVSEP]);
});

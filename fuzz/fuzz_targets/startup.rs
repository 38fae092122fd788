//! The database front's startup packet: `codec::startup_length` on the first four bytes,
//! `codec::parse_startup` on the rest, `codec::password` and `codec::message_header`.
//!
//! Checked: nothing panics; the length word is accepted exactly when it is 8 to 10000;
//! an accepted startup message re-encodes to the very bytes it came from (so nothing
//! was dropped, merged or invented), with non-empty, unique names, at most 64 pairs and
//! no NUL inside a name or value; a request code is accepted only with its exact size;
//! the access reason, when found, is non-empty and part of `options` or
//! `application_name`.
#![no_main]

use isogate::database::codec::{self, Startup, MAX_STARTUP_PARAMETERS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((word, body)) = data.split_first_chunk::<4>() else { return };
    let declared = u32::from_be_bytes(*word) as usize;
    match codec::startup_length(*word) {
        Ok(rest) => assert!((8..=10_000).contains(&declared) && rest == declared - 4),
        Err(_) => assert!(!(8..=10_000).contains(&declared)),
    }
    if let Ok((_, length)) =
        codec::message_header([word[0], word[1], word[2], word[3], body.first().copied().unwrap_or(0)])
    {
        assert!(length < u32::MAX as usize);
    }
    if let Some(password) = codec::password(body) {
        assert!(!password.contains(&0) && password.len() + 1 == body.len());
    }
    match codec::parse_startup(body) {
        Ok(Startup::Start(params)) => {
            assert!(params.pairs.len() <= MAX_STARTUP_PARAMETERS);
            let mut again = ((3u32 << 16) | u32::from(params.minor)).to_be_bytes().to_vec();
            for (i, (name, value)) in params.pairs.iter().enumerate() {
                assert!(!name.is_empty() && !name.contains('\0') && !value.contains('\0'));
                assert!(params.pairs[..i].iter().all(|(n, _)| n != name), "repeated {name:?}");
                again.extend_from_slice(name.as_bytes());
                again.push(0);
                again.extend_from_slice(value.as_bytes());
                again.push(0);
            }
            again.push(0);
            assert_eq!(again, body, "an accepted startup message re-encodes to its input");
            if let Some(reason) = params.access_reason() {
                assert!(!reason.is_empty());
                let sources = [params.get("options"), params.get("application_name")];
                assert!(sources.iter().flatten().any(|s| s.len() >= reason.len()), "{reason:?} from nowhere");
            }
        }
        Ok(Startup::SslRequest | Startup::GssEncRequest) => assert_eq!(body.len(), 4),
        Ok(Startup::Cancel(_)) => assert_eq!(body.len(), 12),
        Err(_) => {}
    }
});

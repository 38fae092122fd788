use super::*;

fn cached(exp: u64, nbf: Option<u64>) -> Cached {
    let identity =
        Identity { expires_at: Some(exp), not_before: nbf, tenant: Some("acme".into()), ..Default::default() };
    Cached { identity: Arc::new(identity), issuer: IssuerId(0), key_id: 7, leeway: 10 }
}

/// A token-like key whose signature bytes vary with `i`.
fn token(i: usize) -> String {
    format!("header.payload.sig{i:08}")
}

#[test]
fn hits_recheck_time_claims() {
    let c = TokenCache::new(10);
    c.insert("t", cached(100, Some(50)), 60);
    assert!(c.get("t", 60).is_some());
    assert!(c.get("t", 110).is_some(), "within leeway");
    assert!(c.get("t", 111).is_none(), "expired");
    assert_eq!(c.len(), 0, "expired entries are dropped");
    c.insert("n", cached(1000, Some(500)), 100);
    assert!(c.get("n", 100).is_none(), "not yet valid");
    let off = TokenCache::new(0);
    off.insert("a", cached(100, None), 0);
    assert!(off.get("a", 0).is_none());
}

#[test]
fn new_tokens_are_cached_under_churn_and_tokens_in_use_stay() {
    let c = TokenCache::new(100);
    c.insert("hot", cached(10_000, None), 0);
    for i in 0..10_000 {
        let t = token(i);
        c.insert(&t, cached(10_000, None), 0);
        assert!(c.get(&t, 0).is_some(), "token {i} was not cached");
        assert!(c.get("hot", 0).is_some(), "the token in use was evicted at {i}");
        assert!(c.len() <= 100, "{} entries", c.len());
        assert_eq!(c.len(), c.map.len());
    }
}

#[test]
fn a_sweep_drops_idle_and_expired_entries_before_busy_ones() {
    let c = TokenCache::new(10);
    for i in 0..10 {
        c.insert(&token(i), cached(if i < 2 { 50 } else { 1_000 }, None), 0);
    }
    for i in 5..10 {
        assert!(c.get(&token(i), 0).is_some());
    }
    c.insert("new", cached(1_000, None), 100);
    assert!(c.get("new", 100).is_some());
    assert_eq!(c.len(), 6, "expired (0, 1) and idle (2..5) entries left; busy ones stayed");
    for i in 5..10 {
        assert!(c.get(&token(i), 100).is_some(), "busy token {i} kept");
    }
}

#[test]
fn when_everything_is_in_use_a_sweep_still_makes_room() {
    let c = TokenCache::new(64);
    for i in 0..64 {
        c.insert(&token(i), cached(1_000, None), 0);
        c.get(&token(i), 0);
    }
    for round in 0..20 {
        let t = format!("new-{round}");
        c.insert(&t, cached(1_000, None), 0);
        assert!(c.get(&t, 0).is_some(), "round {round}: the new token was not cached");
        assert!(c.len() <= 64);
    }
}

#[test]
fn adopting_keeps_mapped_current_entries_only() {
    let old = TokenCache::new(10);
    old.insert("a", cached(1_000, None), 0);
    old.insert("b", cached(1_000, None), 0);
    old.insert("late", cached(50, None), 0);
    let mut other = cached(1_000, None);
    other.issuer = IssuerId(1);
    old.insert("dropped", other, 0);
    let new = TokenCache::new(10);
    new.adopt(&old, 100, |id| (id == IssuerId(0)).then_some(IssuerId(3)));
    assert_eq!(new.len(), 2, "the expired entry and the changed issuer's entry stay behind");
    let a = new.get("a", 100).unwrap();
    assert_eq!((a.issuer, a.identity.issuer), (IssuerId(3), IssuerId(3)), "renumbered issuer");
    assert!(new.get("dropped", 100).is_none());
    let small = TokenCache::new(1);
    small.adopt(&old, 100, Some);
    assert_eq!(small.len(), 1, "adoption respects the new capacity");
}

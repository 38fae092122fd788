use std::sync::Arc;

use prometheus::{IntCounter, IntGauge};

use super::*;

fn connections(limit: usize) -> Arc<Connections> {
    let metrics = ConnectionMetrics {
        open: IntGauge::new("open", "open").unwrap(),
        refused: IntCounter::new("refused", "refused").unwrap(),
    };
    Connections::new(limit, metrics)
}

#[test]
fn slots_stop_at_the_limit_and_come_back_when_released() {
    let c = connections(2);
    let a = c.try_open().unwrap();
    let b = c.try_open().unwrap();
    assert!(c.try_open().is_none(), "the third connection is over the limit");
    assert_eq!((c.open(), c.metrics.open.get()), (2, 2));
    drop(a);
    assert_eq!((c.open(), c.metrics.open.get()), (1, 1));
    let _c = c.try_open().expect("a released slot is free again");
    drop(b);
    assert_eq!(c.open(), 1);
}

#[test]
fn a_zero_limit_still_admits_one() {
    let c = connections(0);
    let _a = c.try_open().unwrap();
    assert!(c.try_open().is_none());
}

#[tokio::test]
async fn wait_idle_resolves_once_connections_and_requests_are_gone() {
    let c = connections(10);
    let conn = c.try_open().unwrap();
    let request = c.start_request();
    let waiter = tokio::spawn({
        let c = Arc::clone(&c);
        async move { c.wait_idle().await }
    });
    tokio::task::yield_now().await;
    drop(conn);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a request is still being processed");
    drop(request);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
}

#[tokio::test]
async fn wait_idle_returns_at_once_when_nothing_is_open() {
    connections(1).wait_idle().await;
}

#[test]
fn the_refusal_is_a_whole_http_response_with_a_json_body() {
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(REFUSAL).unwrap() else { panic!("partial head") };
    assert_eq!(response.code, Some(503));
    let length = response.headers.iter().find(|h| h.name == "content-length").unwrap().value;
    let body = &REFUSAL[head..];
    assert_eq!(std::str::from_utf8(length).unwrap(), body.len().to_string());
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json, serde_json::json!({"error": "too_many_connections", "status": 503}));
}

#[test]
fn refusals_answered_at_once_are_bounded() {
    let c = connections(1);
    let answering: Vec<Slot> = (0..MAX_LINGERING_REFUSALS).map(|_| c.try_refuse().unwrap()).collect();
    assert!(c.try_refuse().is_none(), "past the bound a refused connection is only closed");
    drop(answering);
    assert!(c.try_refuse().is_some());
    assert_eq!((c.open(), c.busy()), (0, 0), "refusals are neither connections nor requests");
}

//! A WebSocket upstream built on tokio-tungstenite (a server isogate did not write): it
//! records every connection and every handshake request it sees, and either accepts
//! the upgrade and echoes messages back, or refuses it with a chosen status.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{http, Message};

/// How the upstream answers an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 101, choosing the first offered subprotocol that is not `bearer` (if any), then
    /// echoes every message.
    Echo,
    /// Refuses the upgrade with this status (e.g. 200 or 403).
    Refuse(u16),
    /// 101, then sends a message every 200 ms and reads nothing.
    Push,
}

/// One handshake request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct WsUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
}

impl WsUpstream {
    /// Binds `127.0.0.1:0` on the current tokio runtime.
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&connections), Arc::clone(&handshakes));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
                    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        seen.lock().unwrap().push(Handshake { target: req.uri().to_string(), headers });
                        match answer {
                            Answer::Refuse(status) => {
                                let mut refusal = ErrorResponse::new(Some("no tunnel here".to_owned()));
                                *refusal.status_mut() = http::StatusCode::from_u16(status).unwrap();
                                Err(refusal)
                            }
                            Answer::Echo | Answer::Push => {
                                let offered = req.headers().get("sec-websocket-protocol");
                                let chosen = offered
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.split(',').map(str::trim).find(|p| *p != "bearer"))
                                    .map(str::to_owned);
                                if let Some(p) = chosen {
                                    resp.headers_mut().insert("sec-websocket-protocol", p.parse().unwrap());
                                }
                                Ok(resp)
                            }
                        }
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                    if answer == Answer::Push {
                        while ws.send(Message::text("news")).await.is_ok() {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            break;
                        }
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, connections, handshakes }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Handshake requests seen so far.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

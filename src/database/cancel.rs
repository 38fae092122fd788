//! Cancel keys: each client session gets a key the gateway made up, mapped to the key
//! of the server backend serving it. A `CancelRequest` is sent on only when both the
//! process id and the secret match a live session, and only to that session's backend,
//! so a client can cancel its own query and nobody else's.
//!
//! With several gateway processes behind one address (`[database_cancel]`), each
//! process puts its peer id in the process ids it hands out. A cancel request for a key
//! this process does not hold, carrying another peer's id, is forwarded once to that
//! peer, marked as forwarded; a marked request is never forwarded again, so a
//! misconfigured set of peers cannot make a loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{cancel_request, BackendKey};

/// Bits of a process id below the peer id (the peer id takes the 8 above them).
const PEER_SHIFT: u32 = 23;
/// The random part of a process id when the peer id is in it.
const LOCAL_BITS: i32 = (1 << PEER_SHIFT) - 1;
/// Set in the process id of a request one peer forwarded to another.
const FORWARDED: i32 = i32::MIN;
/// Longest time to connect and send a cancel request.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `[database_cancel]`, compiled: this process's peer id and where the other peers
/// take cancel requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peering {
    /// This process's peer id (1 to 255), put in every cancel key it hands out.
    pub id: Option<u8>,
    /// The other peers' database listener addresses, by peer id.
    pub peers: HashMap<u8, SocketAddr>,
}

/// What became of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Sent to the server backend of a session of this process.
    Sent,
    /// Forwarded to the peer that handed the key out.
    Forwarded,
    /// No session here holds the key (or the secret was wrong): dropped.
    UnknownKey,
    /// The key names a peer that `[database_cancel] peers` does not list: dropped.
    UnknownPeer,
    /// The server or the peer could not be reached.
    Failed,
}

impl CancelOutcome {
    /// Every outcome's metric label.
    pub const LABELS: [&'static str; 5] = ["sent", "forwarded", "unknown_key", "unknown_peer", "failed"];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Forwarded => "forwarded",
            Self::UnknownKey => "unknown_key",
            Self::UnknownPeer => "unknown_peer",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Backend {
    secret: i32,
    server: SocketAddr,
    key: BackendKey,
}

/// Live sessions by the process id the gateway gave them.
#[derive(Debug, Default)]
pub struct CancelKeys {
    by_pid: DashMap<i32, Backend>,
}

/// A session's entry; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    keys: Arc<CancelKeys>,
    /// The key the client was given.
    pub key: BackendKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keys.by_pid.remove(&self.key.pid);
    }
}

impl CancelKeys {
    /// Issues a fresh key for a session served by `server`'s backend `key`; its process
    /// id carries `peer` when the process has a peer id.
    pub fn register(self: &Arc<Self>, server: SocketAddr, key: BackendKey, peer: Option<u8>) -> Registration {
        loop {
            let random = rand::random::<i32>();
            let pid = match peer {
                Some(id) => (i32::from(id) << PEER_SHIFT) | (random & LOCAL_BITS),
                None => random & i32::MAX,
            };
            if pid == 0 {
                continue;
            }
            if let dashmap::Entry::Vacant(slot) = self.by_pid.entry(pid) {
                let secret = rand::random::<i32>();
                slot.insert(Backend { secret, server, key });
                return Registration { keys: Arc::clone(self), key: BackendKey { pid, secret } };
            }
        }
    }

    /// Sends a cancel request on: to the backend of this process's session holding
    /// `key`, or else, once, to the peer whose id `key` carries. The client is told
    /// nothing either way, as PostgreSQL does.
    pub async fn cancel(&self, key: BackendKey, peering: &Peering) -> CancelOutcome {
        let forwarded = key.pid & FORWARDED != 0;
        let pid = key.pid & i32::MAX;
        if let Some(backend) = self.by_pid.get(&pid).map(|b| *b) {
            if backend.secret != key.secret {
                return CancelOutcome::UnknownKey;
            }
            return send_cancel(backend.server, backend.key).await;
        }
        let Some(own) = peering.id else { return CancelOutcome::UnknownKey };
        // Eight bits, so the cast keeps them all.
        let owner = (pid >> PEER_SHIFT) as u8;
        if forwarded || owner == own {
            return CancelOutcome::UnknownKey;
        }
        let Some(peer) = peering.peers.get(&owner) else { return CancelOutcome::UnknownPeer };
        match send_cancel(*peer, BackendKey { pid: pid | FORWARDED, secret: key.secret }).await {
            CancelOutcome::Sent => CancelOutcome::Forwarded,
            other => other,
        }
    }

    /// Sessions registered.
    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

/// Sends `to` a cancel request for `key`: `Sent` when it went out, else `Failed`.
pub async fn send_cancel(to: SocketAddr, key: BackendKey) -> CancelOutcome {
    let sent = tokio::time::timeout(SEND_TIMEOUT, async {
        let mut stream = TcpStream::connect(to).await?;
        stream.write_all(&cancel_request(key)).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    match sent {
        Ok(()) => CancelOutcome::Sent,
        Err(e) => {
            log::warn!(target: "isogate::database", "cannot send a cancel request to {to}: {e}");
            CancelOutcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wrong_secret_cancels_nothing_and_a_session_end_removes_its_key() {
        let keys = Arc::new(CancelKeys::default());
        let server = "127.0.0.1:9".parse().unwrap();
        let none = Peering::default();
        let reg = keys.register(server, BackendKey { pid: 7, secret: 8 }, None);
        let wrong = BackendKey { pid: reg.key.pid, secret: reg.key.secret.wrapping_add(1) };
        assert_eq!(keys.cancel(wrong, &none).await, CancelOutcome::UnknownKey);
        assert_eq!(keys.len(), 1);
        let key = reg.key;
        drop(reg);
        assert!(keys.is_empty());
        assert_eq!(keys.cancel(key, &none).await, CancelOutcome::UnknownKey);
    }

    #[tokio::test]
    async fn a_key_carries_its_peer_and_is_forwarded_once_to_a_known_peer_only() {
        let server = "127.0.0.1:9".parse().unwrap();
        let keys = Arc::new(CancelKeys::default());
        for _ in 0..100 {
            let reg = keys.register(server, BackendKey { pid: 1, secret: 1 }, Some(255));
            assert!(reg.key.pid > 0 && reg.key.pid >> PEER_SHIFT == 255, "{:x}", reg.key.pid);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peering = Peering { id: Some(1), peers: HashMap::from([(2, listener.local_addr().unwrap())]) };
        let of = |peer: i32| BackendKey { pid: (peer << PEER_SHIFT) | 5, secret: 6 };
        assert_eq!(keys.cancel(of(3), &peering).await, CancelOutcome::UnknownPeer);
        assert_eq!(keys.cancel(of(1), &peering).await, CancelOutcome::UnknownKey, "its own, but no session");
        let forwarded = BackendKey { pid: of(2).pid | FORWARDED, secret: 6 };
        assert_eq!(keys.cancel(forwarded, &peering).await, CancelOutcome::UnknownKey, "never forwarded twice");
        assert_eq!(keys.cancel(of(2), &peering).await, CancelOutcome::Forwarded);
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut request).await.unwrap();
        assert_eq!(request, cancel_request(forwarded));
    }
}

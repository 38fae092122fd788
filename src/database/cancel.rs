//! Cancel keys: each client session gets a key the gateway made up, mapped to the key
//! of the server backend serving it. A `CancelRequest` is forwarded only when both the
//! process id and the secret match a live session, and only to that session's backend,
//! so a client can cancel its own query and nobody else's.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{cancel_request, BackendKey};

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
    /// Issues a fresh key for a session served by `server`'s backend `key`.
    pub fn register(self: &Arc<Self>, server: SocketAddr, key: BackendKey) -> Registration {
        loop {
            let pid = rand::random::<i32>() & i32::MAX;
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

    /// Forwards a cancel request to the backend of the session holding `key`. Returns
    /// whether one did (the client is told nothing either way, as PostgreSQL does).
    pub async fn cancel(&self, key: BackendKey) -> bool {
        let Some(backend) = self.by_pid.get(&key.pid).map(|b| *b) else { return false };
        if backend.secret != key.secret {
            return false;
        }
        cancel_backend(backend.server, backend.key).await
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

/// Asks `server` to cancel the query of its backend `key`; whether the request went out.
pub async fn cancel_backend(server: SocketAddr, key: BackendKey) -> bool {
    match TcpStream::connect(server).await {
        Ok(mut stream) => stream.write_all(&cancel_request(key)).await.is_ok(),
        Err(e) => {
            log::warn!(target: "isogate::database", "cannot send a cancel request to {server}: {e}");
            false
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
        let reg = keys.register(server, BackendKey { pid: 7, secret: 8 });
        let wrong = BackendKey { pid: reg.key.pid, secret: reg.key.secret.wrapping_add(1) };
        assert!(!keys.cancel(wrong).await);
        assert_eq!(keys.len(), 1);
        let key = reg.key;
        drop(reg);
        assert!(keys.is_empty());
        assert!(!keys.cancel(key).await);
    }
}

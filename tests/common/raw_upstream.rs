//! A raw TCP upstream for what the echo upstream cannot show: it records every byte a
//! connection sent, and can hold a streamed response open until released.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the upstream answers each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Reads until the peer closes; never answers.
    Record,
    /// After the request head, sends a chunked response head and one chunk, then holds
    /// the response open until `release`, then ends it.
    Stream,
    /// Like `Stream`, as server-sent events: `data: one` first, `data: two` on release.
    Events,
}

impl Behaviour {
    fn head_and_first(self) -> Option<&'static [u8]> {
        match self {
            Behaviour::Record => None,
            Behaviour::Stream => Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"),
            Behaviour::Events => Some(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                transfer-encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
            ),
        }
    }

    fn last(self) -> &'static [u8] {
        match self {
            Behaviour::Events => b"b\r\ndata: two\n\n\r\n0\r\n\r\n",
            _ => b"4\r\nlast\r\n0\r\n\r\n",
        }
    }
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    released: Arc<AtomicBool>,
    heads: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let released = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(AtomicUsize::new(0));
        let (r, rel, h) = (Arc::clone(&received), Arc::clone(&released), Arc::clone(&heads));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, rel, h) = (Arc::clone(&r), Arc::clone(&rel), Arc::clone(&h));
                std::thread::spawn(move || serve(stream, behaviour, &r, &rel, &h));
            }
        });
        Self { addr, received, released, heads }
    }

    /// Everything each connection sent so far, one entry per connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Request heads seen so far.
    pub fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    /// Lets held streams end.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    received: &Mutex<Vec<Vec<u8>>>,
    released: &AtomicBool,
    heads: &AtomicUsize,
) {
    let index = {
        let mut r = received.lock().unwrap();
        r.push(Vec::new());
        r.len() - 1
    };
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut chunk = [0u8; 16 * 1024];
    let mut answered = false;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                let mut r = received.lock().unwrap();
                r[index].extend_from_slice(&chunk[..n]);
                let head_done = r[index].windows(4).any(|w| w == b"\r\n\r\n");
                drop(r);
                if head_done && !answered {
                    answered = true;
                    heads.fetch_add(1, Ordering::SeqCst);
                    if let Some(first) = behaviour.head_and_first() {
                        let _ = stream.write_all(first);
                    }
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        if answered && behaviour != Behaviour::Record && released.load(Ordering::SeqCst) {
            let _ = stream.write_all(behaviour.last());
            return;
        }
    }
}

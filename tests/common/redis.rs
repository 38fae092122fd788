//! A real `redis-server` on an ephemeral loopback port, killed on drop. It never skips:
//! a missing binary fails the test (CI installs `redis-server`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{eventually, free_addr};

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_on(free_addr())
    }

    /// Starts on `addr` (to restart a killed server on the same port).
    pub fn start_on(addr: SocketAddr) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/dev installs it)");
        eventually("redis-server listening", || std::net::TcpStream::connect(addr).ok());
        Self { addr, child: Some(child) }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Zero-downtime binary upgrade: a new process started with `--upgrade` takes the
//! listening sockets over when the old one gets SIGQUIT; a load running across the
//! hand-over sees no failed request, and the old process drains and exits cleanly.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client;
use common::jws::{claims, token};
use common::*;

#[test]
fn a_load_across_an_upgrade_sees_no_failed_request() {
    let ups = standard_upstreams();
    let dev = free_addr();
    let config = standard_config(&ups, "").replace(
        "shutdown_timeout_seconds = 1",
        "shutdown_timeout_seconds = 1\nupgrade_socket = \"@DIR@/upgrade.sock\"",
    );
    let mut old = Gateway::start(&config, &[("@DEV@", dev)]);
    let (addr, t) = (old.addr, token("HS256", claims("prod", "acme")));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let auth = format!("Bearer {t}");
                match client::get(addr, "prod.test", "/api", &[("authorization", auth.as_str())]) {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    eventually("load before the upgrade", || (ok.load(Ordering::Relaxed) > 20).then_some(()));

    let mut new = old.spawn_upgrade();
    // SIGQUIT makes the old process hand its listeners over the upgrade socket (it
    // retries until the new process listens there).
    old.signal("QUIT");
    let status = old.wait_for_exit();
    assert!(status.success(), "old process exit: {status}");
    let before = ok.load(Ordering::Relaxed);
    eventually("the new process serves alone", || (ok.load(Ordering::Relaxed) > before + 20).then_some(()));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests failed across the upgrade",
        failed.load(Ordering::Relaxed)
    );
    assert!(new.try_wait().unwrap().is_none(), "the new process keeps running");
    let _ = new.kill();
    let _ = new.wait();
}

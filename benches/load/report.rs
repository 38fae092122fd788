//! The load harness's output: the table of medians, each scenario against its HAProxy
//! peer, direct and nginx, and the targets isogate is held to, met or not.

use super::{Alg, Proxy, Sample, Scenario, Tenants};

/// The peer a scenario is compared with: HAProxy with the same algorithm and connections.
fn haproxy_peer(scenario: &Scenario) -> Option<&'static str> {
    match (scenario.proxy, scenario.connections) {
        (Proxy::Isogate(Alg::Hs256, Tenants::Many), Some(1)) => Some("haproxy-hs256-1conn"),
        (Proxy::Isogate(Alg::Hs256, _), None) => Some("haproxy-hs256"),
        (Proxy::Isogate(Alg::Rs256, Tenants::Churn), None) => Some("haproxy-rs256-churn"),
        (Proxy::Isogate(Alg::Rs256, _), None) => Some("haproxy-rs256"),
        (Proxy::Isogate(Alg::Es256, _), None) => Some("haproxy-es256"),
        _ => None,
    }
}

/// The targets the harness holds isogate to, met or not, from this run's medians.
pub(crate) fn print_targets(results: &[(Scenario, Sample)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name).map(|(_, r)| r);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let line = |what: String, ok: Option<bool>| match ok {
        Some(ok) => println!("| {what} | {} |", verdict(ok)),
        None => println!("| {what} | not measured in this run |"),
    };
    println!("\n| target | result |\n|---|---|");
    let pair = |a: &str, b: &str| find(a).zip(find(b));
    if let Some((iso, bare)) = pair("isogate-hs256", "pingora-bare") {
        let (i, b) = (iso.cpu_us_per_request.unwrap_or(f64::NAN), bare.cpu_us_per_request.unwrap_or(f64::NAN));
        line(
            format!("HS256 proxy CPU ≤ 1.15× pingora-bare's: {:.2}× ({i:.1} against {b:.1} µs)", i / b),
            Some(i <= 1.15 * b),
        );
    }
    if let Some((iso, floor)) = pair("isogate-hs256", "pingora-headers") {
        let (i, f) = (iso.cpu_us_per_request.unwrap_or(f64::NAN), floor.cpu_us_per_request.unwrap_or(f64::NAN));
        println!("| for reference: HS256 proxy CPU against pingora-headers (pingora setting the job's headers only): {:.2}× ({i:.1} against {f:.1} µs) | - |", i / f);
    }
    for (iso, peer, factor) in [
        ("isogate-hs256", "haproxy-hs256", 1.0),
        ("isogate-rs256", "haproxy-rs256", 1.5),
        ("isogate-es256", "haproxy-es256", 1.5),
        ("isogate-rs256-churn", "haproxy-rs256-churn", 1.0),
    ] {
        match pair(iso, peer) {
            Some((i, h)) => {
                let rps = i.rps / h.rps;
                line(format!("{iso} req/s ≥ {factor}× {peer}'s: {rps:.2}×"), Some(rps >= factor));
                let p99 = format!(
                    "{iso} p99 ≤ {peer}'s: {:.2} against {:.2} ms",
                    i.p99_us as f64 / 1e3,
                    h.p99_us as f64 / 1e3
                );
                line(p99, Some(i.p99_us <= h.p99_us));
            }
            None => line(format!("{iso} against {peer}"), None),
        }
    }
    if let Some((small, big)) = pair("isogate-map-10", "isogate-map-1m") {
        let slower = 1.0 - big.rps / small.rps;
        line(format!("10^6 tenants ≤ 5% slower than 10: {:.1}% slower", slower * 100.0), Some(slower <= 0.05));
    }
}

pub(crate) fn print_table(results: &[(Scenario, Sample)]) {
    let find = |name: &str| results.iter().find(|(s, _)| s.name == name).map(|(_, r)| r);
    let ratio = |a: f64, b: Option<f64>| b.map_or_else(|| "-".to_owned(), |b| format!("{:.2}x", a / b));
    println!(
        "\n| scenario | conns | req/s | p50 | p99 | proxy CPU µs/req | of it kernel | RSS MiB | vs HAProxy req/s | vs direct req/s | CPU vs nginx-proxy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, r) in results {
        let direct = if scenario.connections == Some(1) { "direct-1conn" } else { "direct" };
        let one_decimal = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        let nginx_cpu = find("nginx-proxy").and_then(|n| n.cpu_us_per_request);
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} | {} | {} | {} |",
            scenario.name,
            scenario.connections.map_or_else(|| "default".to_owned(), |c| c.to_string()),
            r.rps,
            r.p50_us as f64 / 1000.0,
            r.p99_us as f64 / 1000.0,
            one_decimal(r.cpu_us_per_request),
            one_decimal(r.system_us_per_request),
            r.rss_kib.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0)),
            ratio(r.rps, haproxy_peer(scenario).and_then(find).map(|h| h.rps)),
            ratio(r.rps, find(direct).map(|d| d.rps)),
            r.cpu_us_per_request.map_or_else(|| "-".to_owned(), |c| ratio(c, nginx_cpu)),
        );
    }
}

//! isogate: a reverse-proxy isolation gateway.
//!
//! Request path, one module per stage:
//! `auth` (identify) → `bind` (environment) → `policy` (authorise) → `routing` (pool)
//! → `ratelimit` (limit) → `headers` + `forwarded` + `upstream` (forward) → `audit` +
//! `metrics` (record); `trace` carries the W3C trace context across the hop. `admission` composes the stages up to the limit into one typed
//! pipeline.
//! `config` parses the file, `snapshot` compiles it, `proxy` and `admin` are the only
//! pingora-facing modules, and `server` wires them into a process.

mod addr_text;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod bind;
pub mod config;
pub mod connections;
pub mod cors;
pub mod database;
pub mod diag;
pub mod drain;
pub mod forwarded;
pub mod headers;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reject;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod template;
pub mod tenant_label;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod websocket;

//! The `isogate` command: `run` the gateway from a TOML file, `check` a file like
//! `nginx -t`, or run the self-contained `demo`.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use demo::Demo;
use isogate::config::process_env;
use isogate::server;
use isogate::snapshot::Snapshot;

/// mimalloc's per-thread free lists: a request allocates and frees dozens of small
/// buffers (pingora's header maps, the audit line); against glibc's malloc it cut proxy
/// CPU per request by a seventh in the load harness (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reverse-proxy isolation gateway: JWT identity, environment binding, tenant routing.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listeners over from the running process (then send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file; list every problem and exit 1 if there is any.
    Check {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run a self-contained demo on loopback with built-in upstreams and fresh tokens.
    Demo {
        /// Proxy address (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin address (port 0 picks a free port).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Send the demo requests, print the results and exit (1 if any differs).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("isogate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => match Snapshot::load(&config, &process_env) {
            Ok(s) => {
                println!(
                    "{}: OK ({} listener(s), {} route(s))",
                    config.display(),
                    s.settings.listeners.len(),
                    s.routes.iter().count()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                eprint!("{errors}");
                if !errors.ends_with('\n') {
                    eprintln!();
                }
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Run { config, upgrade } => {
            let snapshot =
                Snapshot::load(&config, &process_env).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
            server::run(snapshot, server::Launch { config_path: Some(&config), upgrade }).context("cannot start")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, admin, check } => {
            let (snapshot, demo) = Demo::prepare(listen, admin).map_err(|e| anyhow::anyhow!(e))?;
            print!("{}", demo.banner());
            if check {
                // The gateway runs on this thread; the checker sends the requests and ends
                // the process with the verdict.
                std::thread::spawn(move || {
                    let (report, ok) = demo.check(Duration::from_secs(20));
                    print!("{report}");
                    std::process::exit(if ok { 0 } else { 1 });
                });
            }
            server::run(snapshot, server::Launch::default()).context("cannot start the demo")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

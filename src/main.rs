use std::process::ExitCode;

use clap::Parser;
use pgpilot::config::{load::load, Cli};

/// mimalloc instead of glibc's malloc: every connection and every message allocates small,
/// short-lived buffers and state, where glibc's bins and consolidation cost measurably more
/// (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ini) = &cli.from_pgbouncer {
        return match pgpilot::config::pgbouncer::convert_file(ini) {
            Ok(out) => {
                print!("{}", out.toml);
                for d in &out.dropped {
                    eprintln!("pgpilot: not carried over: {d}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("pgpilot: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    let config = match load(&cli).and_then(|c| pgpilot::net::upstream_tls::for_config(&c.upstream).map(|_| c)) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pgpilot: configuration error: {err:#}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        // The effective configuration (file < environment < flags), secrets masked.
        print!("{}", pgpilot::config::env::masked(&config));
        eprintln!("pgpilot: configuration is valid");
        return ExitCode::SUCCESS;
    }
    pgpilot::app::init_logging();
    // Timers on their own thread, so the data runtime's parks skip the time driver's work.
    if let Err(err) = pgpilot::timers::start() {
        eprintln!("pgpilot: cannot start the timer thread: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match data_runtime(&config) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pgpilot: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pgpilot::app::run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgpilot: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime that relays messages. One worker: a current-thread runtime (no work-stealing
/// machinery), as PgBouncer's one loop. No time driver (pgpilot's timers live on the timer thread):
/// its parks then skip the clock read and the expiry pass. The Redis client makes tokio timers
/// itself wherever it runs, so with a Redis tier the data runtime keeps one.
fn data_runtime(config: &pgpilot::config::Config) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = config.server.worker_threads();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    if config.cache.redis().is_some() {
        builder.enable_all();
    } else {
        builder.enable_io();
    }
    builder.build()
}

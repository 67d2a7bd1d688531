use std::process::ExitCode;

use clap::Parser;
use pgpilot::config::{load::load, Cli};

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
    // One worker: a current-thread runtime (no work-stealing machinery), as PgBouncer's one loop.
    // Timers on their own thread, so the data runtime's parks skip the time driver's work.
    if let Err(err) = pgpilot::timers::start() {
        eprintln!("pgpilot: cannot start the timer thread: {err}");
        return ExitCode::FAILURE;
    }
    let workers = config.server.worker_threads();
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
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

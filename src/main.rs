use std::process::ExitCode;

use clap::Parser;
use pgpilot::config::{load::load, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pgpilot: configuration error: {err:#}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("pgpilot: configuration is valid");
        return ExitCode::SUCCESS;
    }
    pgpilot::app::init_logging();
    let workers = config.server.worker_threads();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
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

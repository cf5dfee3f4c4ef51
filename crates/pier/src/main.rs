//! The `pier` binary: parses the command line, then either runs the server (`pier server`, `pier up`),
//! checks the host (`pier doctor`), or runs a client command against a running server. Wiring lives in [`server`]; everything else in the crates.

use std::process::ExitCode;

use clap::Parser;
use pier_cli::{Cli, Command};

mod doctor;
mod server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args, None),
        Command::Up(args) => server::run(args.server, Some(args.path)),
        Command::Doctor(args) => doctor::run(Some(
            args.data_dir
                .unwrap_or_else(pier_cli::config::default_data_dir),
        )),
        _ => run_client(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            pier_cli::output::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run_client(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(pier_cli::run_client(cli))
}

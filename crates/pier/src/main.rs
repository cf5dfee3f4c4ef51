//! The `pier` binary: parses the command line, then either runs the server (`pier server`, `pier up`),
//! checks the host (`pier doctor`), or runs a client command against a running server. The server's
//! flags are in [`cli`], its wiring in [`server`]; everything else in the crates.

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

mod cli;
mod docs;
mod doctor;
mod server;

fn main() -> ExitCode {
    // The container shim the server runs per gen2 instance: before any parsing, as it must start fast.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == pier_container::shim::ARG) {
        return pier_container::shim::main(&args[2..]);
    }
    // The gate a process instance's sandbox waits in until its program may run.
    if args
        .get(1)
        .is_some_and(|a| a == pier_sandbox::launch::gate::ARG)
    {
        std::process::exit(pier_sandbox::launch::gate::main(&args[2..]));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::run(args, None),
        Command::Up(args) => server::run(args.server, Some(args.path)),
        Command::Doctor(args) => doctor::run(Some(
            args.data_dir
                .unwrap_or_else(pier_cli::config::default_data_dir),
        )),
        Command::Completion { shell } => docs::completion(shell),
        Command::Man { dir } => docs::man_pages(&dir),
        Command::Client(command) => run_client(cli.globals, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            pier_cli::output::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run_client(globals: pier_cli::Globals, command: pier_cli::Command) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(pier_cli::run_client(globals, command))
}

//! The `chronicle` command: parses arguments, calls the libraries, formats their output.

#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Record what a program's functions receive and return, from outside the process.
#[derive(Parser)]
#[command(name = "chronicle", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Attach(cmd::attach::Args),
    Functions(cmd::functions::Args),
    Export(cmd::export::Args),
    Query(cmd::query::Args),
    Ask(cmd::ask::Args),
    Dashboard(cmd::dashboard::Args),
    Mcp(cmd::mcp::Args),
    Replay(cmd::replay::Args),
    GenerateTests(cmd::generate_tests::Args),
    Symbols(cmd::symbols::Args),
    Cleanup(cmd::cleanup::Args),
}

/// Exit codes of the public CLI contract.
pub mod exit {
    pub const OK: u8 = 0;
    pub const DIFFERENCES: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const ENVIRONMENT: u8 = 3;
}

/// An error that carries the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            code: exit::USAGE,
            error: error.into(),
        }
    }
}

impl Failure {
    pub fn environment(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::ENVIRONMENT,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach(args) => cmd::attach::run(args),
        Command::Functions(args) => cmd::functions::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Query(args) => cmd::query::run(args),
        Command::Ask(args) => cmd::ask::run(args),
        Command::Dashboard(args) => cmd::dashboard::run(args),
        Command::Mcp(args) => cmd::mcp::run(args),
        Command::Replay(args) => cmd::replay::run(args),
        Command::GenerateTests(args) => cmd::generate_tests::run(args),
        Command::Symbols(args) => cmd::symbols::run(args),
        Command::Cleanup(args) => cmd::cleanup::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) if is_broken_pipe(&failure.error) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("chronicle: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

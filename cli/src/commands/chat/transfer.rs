//! `cli chat transfer receive|send`: under construction.

use std::process::ExitCode;

use clap::Subcommand;

/// The transfer subcommands.
#[derive(Debug, Subcommand)]
pub enum TransferCommand {}

/// Runs a transfer subcommand.
pub fn run(command: TransferCommand) -> anyhow::Result<ExitCode> {
    match command {}
}

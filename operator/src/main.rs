//! The `poolwarden-operator` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes operator for DbPoolPolicy.
#[derive(Parser, Debug)]
#[command(name = "poolwarden-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the DbPoolPolicy CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", poolwarden_crds::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}

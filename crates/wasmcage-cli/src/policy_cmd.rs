//! `wasmcage policy check`: validate a policy file and print the effective policy.

use std::path::PathBuf;
use std::process::ExitCode;

use wasmcage::Profile;

use crate::run::{effective_policy, status};

/// Work with policy files.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print the effective policy (the profile and the file
    /// combined) in the same TOML format. Exit status 0 when valid, 126 with the key and the
    /// reason when not.
    Check {
        /// The policy file.
        file: PathBuf,
        /// The profile the file extends, unless it names one itself.
        #[arg(long, value_name = "NAME", value_parser = |s: &str| s.parse::<Profile>())]
        profile: Option<Profile>,
    },
}

pub fn main(args: PolicyArgs) -> ExitCode {
    match args.command {
        PolicyCommand::Check { file, profile } => {
            match effective_policy(profile, Some(&file), None) {
                Ok(policy) => {
                    print!("{}", policy.to_toml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wasmcage: invalid policy: {e:#}");
                    ExitCode::from(status::HOST_ERROR)
                }
            }
        }
    }
}

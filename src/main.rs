//! `clarity-reconcile`: parse arguments, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    clarity::cli::main()
}

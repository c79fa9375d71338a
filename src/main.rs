//! The acrpull binary: parse flags, run the controller (or `check`), map the outcome to an exit code.

use std::process::ExitCode;

use acrpull::Command;

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    match acrpull::parse(std::env::args().skip(1), &env) {
        Ok(Command::Help) => {
            print!("{}", acrpull::usage());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!(
                "acrpull {} (git {})",
                env!("CARGO_PKG_VERSION"),
                env!("ACRPULL_GIT_REV")
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Run(config)) => {
            acrpull::init_logging(config.log_format, &config.log_level);
            match acrpull::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("acrpull: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::CheckHelp) => {
            print!("{}", acrpull::check_usage());
            ExitCode::SUCCESS
        }
        Ok(Command::Check(args)) => {
            // Quiet by default: the report is the output; RUST_LOG still turns logs on.
            acrpull::init_logging(args.config.log_format, "warn");
            match acrpull::check(&args) {
                Ok(report) => {
                    print!("{}", acrpull::render_check(&report, args.output));
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("acrpull check: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e @ acrpull::UsageError::CheckTarget(_)) => {
            eprintln!("acrpull: {e}\nRun 'acrpull check --help' for usage.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("acrpull: {e}\nRun 'acrpull --help' for usage.");
            ExitCode::from(2)
        }
    }
}

//! The `skiff` command: parses the command line, sets up logging, runs the subcommand and exits
//! with docker's codes (125 for skiff's own errors).

use clap::Parser;
use skiff::cli::{Cli, Command};

/// docker's exit code for an error of the runner itself.
const EXIT_SKIFF_ERROR: i32 = 125;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_SKIFF_ERROR } else { 0 };
            // A flag's value that its parser refused: one line naming the flag and why.
            let line = (e.kind() == clap::error::ErrorKind::ValueValidation)
                .then(|| e.render().to_string())
                .and_then(|text| text.lines().next().map(str::to_string));
            match line {
                Some(line) => eprintln!("skiff: {line}"),
                None => {
                    let _ = e.print();
                }
            }
            std::process::exit(code);
        }
    };
    init_logging(cli.debug);
    let result = match cli.command {
        Command::Run(args) => skiff::run::run(*args, cli.debug),
        Command::Info => skiff::info::info(),
        Command::Pull(args) => skiff::commands::pull::pull(args),
        Command::Login(args) => skiff::commands::login::login(args),
        Command::Logout(args) => skiff::commands::login::logout(args),
        Command::Images(args) => skiff::commands::images::images(args),
        Command::Rmi(args) => skiff::commands::images::rmi(args),
        Command::Tag(args) => skiff::commands::images::tag(args),
        Command::Image(cmd) => skiff::commands::images::image(cmd),
        Command::Load(args) => skiff::commands::archive::load(args),
        Command::Save(args) => skiff::commands::archive::save(args),
        Command::Import(args) => skiff::commands::archive::import(args),
        Command::Volume(cmd) => skiff::volumes::commands::volume(cmd),
        Command::Container(cmd) => skiff::container::cli::dispatch(cmd),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiff: error: {e:#}");
            std::process::exit(EXIT_SKIFF_ERROR);
        }
    }
}

/// Logs go to stderr, each line stamped with the time since skiff started; the filter comes
/// from `SKIFF_LOG`, then `RUST_LOG`, else `warn`
/// (`debug` with `--debug`).
fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "warn" };
    let filter = std::env::var("SKIFF_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .init();
}

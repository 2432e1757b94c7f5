//! The `drillbook` command line; see `drillbook --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = drillbook::failpoint::setup();
    drillbook::cli::init_logging();
    let cli = drillbook::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(drillbook::cli::exit::ERROR);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            drillbook::cli::print_error(&error);
            ExitCode::from(drillbook::cli::exit::ERROR)
        }
    }
}

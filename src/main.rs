//! Arguments in, exit code out. Everything else lives in the library.

use std::process::ExitCode;

use tap_planetscale::cli::{self, LogFormat};
use tap_planetscale::{allocator, app, log, singer};

fn main() -> ExitCode {
    allocator::tune();
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; misuse exits 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let log_format = cli.args.log_format.unwrap_or_default();
    log::init(cli.args.log_level.as_deref(), log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tap-planetscale: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(app::run(cli));
    // Readers still blocked on the network must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if singer::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            match log_format {
                // A structured line keeps its ERROR level in Meltano's log.
                LogFormat::Json => tracing::error!(exit_code = e.exit_code(), "{e}"),
                LogFormat::Text => eprintln!("tap-planetscale: error: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

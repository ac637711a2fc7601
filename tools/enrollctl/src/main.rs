//! `enrollctl`: see the crate's library for the commands.
use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = runtime.block_on(enrollctl::run(std::env::args_os(), &mut out, &mut err));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

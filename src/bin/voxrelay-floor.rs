//! `voxrelay-floor`: the bare servers of `voxrelay::bench::floor`, in a binary of
//! their own so that none of their code is linked into `voxrelay` (whose code
//! layout, and so its idle memory, is measured and kept; BENCHMARKS.md).

use std::process::ExitCode;

use voxrelay::bench::BenchArgsError;
use voxrelay::bench::floor::{FloorOptions, USAGE, serve};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match FloorOptions::from_args(&args) {
        Ok(o) => o,
        Err(BenchArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match voxrelay::server::runtime_builder().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

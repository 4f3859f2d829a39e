//! `test-servers moto|localstack [--endpoint URL]`: the emulator the tests would use, brought up the way they bring
//! it up, and counted as in use until this program's input ends (Ctrl-D, or the other end of a pipe closing) or it
//! is killed. It prints `started URL` or `found URL` once the emulator answers. For trying things against it by
//! hand, and for this crate's tests, which run it as test processes of their own.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use test_servers::Emulator;

#[derive(Debug, Parser)]
struct Arguments {
    emulator: Which,
    /// Where it is to answer; by default where the tests expect it (AWS_ENDPOINT_URL, TEST_LOCALSTACK_URL).
    #[arg(long)]
    endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Moto,
    Localstack,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let emulator = match arguments.emulator {
        Which::Moto => Emulator::Moto,
        Which::Localstack => Emulator::LocalStack,
    };
    let endpoint = arguments.endpoint.unwrap_or_else(|| emulator.configured_endpoint());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(emulator.ensure(&endpoint)) {
        Ok(outcome) => println!("{outcome} {endpoint}"),
        Err(error) => {
            eprintln!("{}", error.report());
            return ExitCode::FAILURE;
        }
    }
    // Whatever arrives is ignored: only the end of the input matters.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    ExitCode::SUCCESS
}

use std::process::ExitCode;

fn main() -> ExitCode {
    nu_agent::main()
}

//! `jobctl`: the operator's command line. Everything lives in `jobd::cli`; this maps the
//! result to an exit code.

fn main() {
    let code = jobd::cli::main_with(
        std::env::args(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}

//! `jobctl`: the operator's command line. Everything lives in `jobd::cli`; this maps the
//! result to an exit code.

fn main() {
    std::process::exit(jobd::cli::main_on_stdio());
}

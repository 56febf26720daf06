fn main() {
    let code = mlxfs::cli::run(std::env::args_os().collect());
    // Not std::process::exit: C library destructors could hang (sys::exit_now says why).
    mlxfs::sys::exit_now(code);
}

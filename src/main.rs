fn main() {
    let code = mlxfs::cli::run(std::env::args_os().collect());
    std::process::exit(code);
}

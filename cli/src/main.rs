fn main() {
    std::process::exit(pillarbox_cli::run(std::env::args_os()));
}

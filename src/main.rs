//! The acrpull binary: parse flags, run the controller, map the outcome to an exit code.

fn main() {
    println!("acrpull {}", env!("CARGO_PKG_VERSION"));
}

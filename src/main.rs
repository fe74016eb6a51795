//! The `stowage` command. The git server (`stowage serve`) is not built yet; see
//! README.md.

fn main() {
    println!(
        "stowage {}: the git server is not built yet",
        env!("CARGO_PKG_VERSION")
    );
}

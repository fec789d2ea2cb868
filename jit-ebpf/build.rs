//! Rebuild the eBPF object whenever the linker changes: cargo does not track it otherwise.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}

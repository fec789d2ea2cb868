//! `cargo xtask`: jit's build, test, bench and VM driver.
mod bench;
mod cmd;
mod demo;
mod dist;
mod initramfs;
mod kernels;
mod libtest;
mod peers;
mod setup;
mod system;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and run jit", version)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Install everything the other commands need (idempotent; needs root on a fresh machine).
    Setup,
    /// fmt, clippy, host unit tests, then the privileged tests in a VM on each kernel.
    Test(test::TestArgs),
    /// Measure in a VM what jit's kernel programs add to exec and open-for-write.
    Bench(bench::BenchArgs),
    /// Build the Debian package `target/dist/jit_VERSION_ARCH.deb` (binaries, systemd unit,
    /// default config, example policies, man pages, completions).
    Dist,
    /// See jit work: boot a VM, run an agent that is allowed, denied and held, and a reviewer
    /// who approves one hold and denies another; print what happened and the audit trail.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Setup => setup::run().map(|_| ExitCode::SUCCESS),
        Commands::Test(args) => test::run(&args),
        Commands::Bench(args) => bench::run(&args),
        Commands::Demo(args) => demo::run(&args),
        Commands::Dist => dist::run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask demo`: jit end to end in a VM booting a stock Debian kernel — the daemon with
//! `policies/demo.toml`, a scripted agent doing allowed, denied and held actions, a scripted
//! reviewer approving one hold and denying another with `jitctl`, and the audit trail.
use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{bench::BenchRun, cmd, initramfs::Initramfs, setup, test::root, vm};

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// The kernel series to boot (`6.1` or `6.12`).
    #[arg(long, value_name = "SERIES", default_value = "6.12")]
    pub kernel: String,
}

/// Where jit-demo is installed in the VM.
const DEMO_IN_VM: &str = "/jit/demo/jit-demo";

/// `/init`'s payload: the demo, framed like a test binary so that its exit status comes back.
const RUN_DEMO: &str = r#"echo "JIT-BIN-START jit-demo"
RUST_LIB_BACKTRACE=0 /jit/demo/jit-demo
echo "JIT-BIN-EXIT jit-demo $?"
"#;

fn build_initramfs(demo: &Path, tools: &[(String, PathBuf)], out_dir: &Path) -> Result<PathBuf> {
    let scratch = out_dir.join("stripped");
    fs::create_dir_all(&scratch)?;
    let mut image = Initramfs::new(&vm::init_script(RUN_DEMO))?;
    image.add_executable(demo, Path::new(DEMO_IN_VM), &scratch)?;
    for (name, path) in tools {
        image.add_executable(path, &Path::new("/jit/bin").join(name), &scratch)?;
    }
    let initrd = out_dir.join("initramfs.cpio");
    image.write(&initrd)?;
    Ok(initrd)
}

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    let installed = setup::run()?;
    let kernel = installed
        .kernels
        .into_iter()
        .find(|k| k.series == args.kernel)
        .with_context(|| {
            format!(
                "--kernel {} is no kernel series (known: 6.1, 6.12)",
                args.kernel
            )
        })?;
    let out_dir = root().join("target").join("xtask").join("demo");
    let initrd = cmd::step(
        "demo",
        "build jit-agent, jitctl, jit-demo and initramfs",
        || {
            fs::create_dir_all(&out_dir)?;
            let tools = crate::test::build_daemon()?;
            let demo = crate::test::build_release_bin("jit-tests", "jit-demo")?;
            Ok((build_initramfs(&demo, &tools, &out_dir)?, "ok".to_owned()))
        },
    )?;
    let dir = out_dir.join(format!("vm-{}", kernel.series));
    let step = format!(
        "boot kernel {} ({}) and run the demo (a few minutes under software emulation)",
        kernel.release, kernel.series
    );
    let vm_run = cmd::step("demo", &step, || {
        let run = vm::run(
            &kernel,
            &initrd,
            &dir,
            &mut None,
            vm::Accel::Tcg,
            Duration::from_mins(20),
            "",
        )?;
        let outcome = match &run.problem {
            None => format!("ok, {}", run.accel.name()),
            Some(problem) => format!("{problem} ({})", run.accel.name()),
        };
        Ok((run, outcome))
    })?;
    let demo = BenchRun::parse(&vm_run.results);
    println!();
    print!("{}", demo.output);
    if demo.status.as_deref() == Some("0") && vm_run.problem.is_none() {
        println!();
        println!(
            "Reviewers can answer the same holds in a browser too: the review page \
             (`[http] web = true`, http://127.0.0.1:7070/ by default) shows each one as a card \
             with approve once / approve for / deny / kill buttons and updates live; README \
             \"The review page\", screenshot in docs/review-page.png. Slack buttons: README \
             \"Slack approvals\"."
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "demo failed ({}); VM output: {} (kernel console: {})",
        demo.status.map_or_else(
            || "did not finish".to_owned(),
            |s| format!("exit status {s}")
        ),
        vm_run.results_log.display(),
        vm_run.console_log.display()
    );
    Ok(ExitCode::FAILURE)
}

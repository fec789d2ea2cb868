//! Running external commands with errors that say what ran and what it printed.
use std::{
    fmt::Write as _,
    io::Write as _,
    process::{Command, Output, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// The command line as a user would type it.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Runs `cmd`, capturing its output; fails with the last lines of stderr and stdout.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !out.status.success() {
        let mut msg = format!("`{}` failed ({})", display(cmd), out.status);
        for (name, bytes) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
            if !bytes.is_empty() {
                let _ = write!(msg, "\n--- last lines of {name} ---\n{}", tail(bytes, 25));
            }
        }
        bail!(msg);
    }
    Ok(out)
}

/// Runs `cmd` and returns its stdout as a string.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One progress line per step: `[group] name ... outcome (time)`.
///
/// The step's closure returns a short outcome ("ok", "installed", ...). A failing step prints
/// which step failed and why, and the error is passed on.
pub fn step<T>(group: &str, name: &str, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
    print!("[{group}] {name} ... ");
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    match f() {
        Ok((value, outcome)) => {
            println!("{outcome} ({:.1}s)", start.elapsed().as_secs_f64());
            Ok(value)
        }
        Err(err) => {
            println!("FAILED ({:.1}s)", start.elapsed().as_secs_f64());
            eprintln!("[{group}] step \"{name}\" failed: {err:#}");
            Err(err.context(format!("step \"{name}\" failed")))
        }
    }
}

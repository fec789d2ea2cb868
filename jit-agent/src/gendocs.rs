//! Man pages and shell completions generated from a binary's clap definition, for the Debian
//! package (`cargo xtask dist`, see README, "Install"). A binary calls [`from_env`] first thing
//! in `main`: with [`ENV`] set to a directory it writes its documents there and exits; the
//! variable is not an option so that it shows in neither `--help`, the man pages nor the
//! completions.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap_complete::Shell;

/// `JIT_GENERATE_DOCS=DIR`: write the documents into DIR and exit.
pub const ENV: &str = "JIT_GENERATE_DOCS";

/// Writes `DIR/man/NAME.SECTION` (and one page per subcommand, `NAME-SUB.SECTION`) and
/// `DIR/completions/{bash,zsh,fish}/...` for `cmd`.
///
/// # Errors
/// When a file cannot be written.
pub fn generate(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_owned();
    let mut written = Vec::new();
    let man_dir = dir.join("man");
    fs::create_dir_all(&man_dir)?;
    man_pages(&cmd, &name, section, &man_dir, &mut written)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.clone()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let out = dir.join("completions").join(sub);
        fs::create_dir_all(&out)?;
        let path = out.join(file);
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        fs::File::create(&path)?.write_all(&buf)?;
        written.push(path);
    }
    Ok(written)
}

fn man_pages(
    cmd: &clap::Command,
    title: &str,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .title(title)
        .section(section)
        .manual("jit")
        .source(format!("jit {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(format!("{title}.{section}"));
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_title = format!("{title}-{}", sub.get_name());
        // `jitctl policy check` is documented on `jitctl-policy-check(1)`; the synopsis names
        // the whole command line.
        let sub = sub.clone().bin_name(sub_title.replace('-', " "));
        man_pages(&sub, &sub_title, section, dir, written)?;
    }
    Ok(())
}

/// With [`ENV`] set: generates the documents of `cmd` into its directory and returns the exit
/// status for `main`; without it, `None` (run normally).
#[must_use]
pub fn from_env(cmd: impl FnOnce() -> clap::Command, section: &str) -> Option<ExitCode> {
    let dir = std::env::var_os(ENV)?;
    Some(match generate(cmd(), section, Path::new(&dir)) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot write the documents into {}: {err}", dir.display());
            ExitCode::FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo", about = "A demo")]
    struct Demo {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        /// Show the status.
        Status,
    }

    #[test]
    fn writes_a_page_per_command_and_three_completions() {
        use clap::CommandFactory as _;
        let dir = tempfile::tempdir().unwrap();
        let files = generate(Demo::command(), "1", dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/demo.1",
                "man/demo-status.1",
                "completions/bash/demo",
                "completions/zsh/_demo",
                "completions/fish/demo.fish"
            ]
        );
        let page = fs::read_to_string(dir.path().join("man/demo-status.1")).unwrap();
        assert!(page.contains("Show the status"), "{page}");
        let bash = fs::read_to_string(dir.path().join("completions/bash/demo")).unwrap();
        assert!(bash.contains("status"), "{bash}");
    }
}

//! Shell completions and man pages, generated from the same clap definitions that parse the command
//! line (so they cannot drift from it).

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell` to stdout (a reader that closes early, such as `head`,
/// ends it quietly).
pub fn completion(shell: clap_complete::Shell) -> Result<()> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "pier", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes `pier.1` and one page per command and subcommand (`pier-services-describe.1`) into `dir`.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut written = 0;
    write_pages(dir, &cmd, "pier", &mut written)?;
    pier_cli::output::note(&format!(
        "wrote {written} man pages into {} (read one with `man -l {}/pier.1`)",
        dir.display(),
        dir.display()
    ));
    Ok(())
}

fn write_pages(dir: &Path, cmd: &clap::Command, name: &str, written: &mut usize) -> Result<()> {
    // Each page is titled by its full command name, as git's pages are (clap wants a static name: a
    // few dozen short strings, once per process).
    let page = cmd
        .clone()
        .name(&*Box::leak(name.to_owned().into_boxed_str()));
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .with_context(|| format!("rendering {name}"))?;
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
    }
    Ok(())
}

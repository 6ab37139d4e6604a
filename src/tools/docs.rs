//! Shell completions and man pages, generated from the command line's own
//! definitions (clap_complete, clap_mangen), so they never drift from the
//! flags; the Debian package installs them (scripts/build-deb.sh).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

use crate::output::{write_output, write_stdout};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write bpfscope.1 and one bpfscope-TOOL.1 per tool.
    pub dir: PathBuf,
}

/// Prints the completion script of `args.shell`.
pub fn run_completions(args: CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::command_line(),
        "bpfscope",
        &mut script,
    );
    write_stdout(&script)
}

/// Writes the man pages, each atomically.
pub fn run_man(args: ManArgs) -> Result<()> {
    let command = crate::command_line();
    let mut pages = vec![("bpfscope".to_string(), command.clone())];
    for tool in command.get_subcommands().filter(|tool| !tool.is_hide_set()) {
        let name = format!("bpfscope-{}", tool.get_name());
        let usage = format!("bpfscope {}", tool.get_name());
        pages.push((name.clone(), tool.clone().name(name).bin_name(usage)));
    }
    for (name, page) in pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut text)
            .with_context(|| format!("rendering {name}.1"))?;
        write_output(Some(&args.dir.join(format!("{name}.1"))), &text)?;
    }
    Ok(())
}

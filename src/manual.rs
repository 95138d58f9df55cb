//! jobctl's manual: an example at the end of every subcommand's help, shell completions
//! (clap_complete) and man pages (clap_mangen), all made from the one clap definition.

use crate::cli::Cli;
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One example per subcommand, shown at the end of its `--help` and in its man page.
/// A subcommand missing here fails the `every_subcommand_has_an_example` test.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "enqueue",
        "jobctl enqueue exec --payload '{\"command\": \"report\"}' --queue reports --delay 5m",
    ),
    (
        "list",
        "jobctl list --state dead --queue reports --limit 20",
    ),
    ("show", "jobctl show 42"),
    (
        "retry",
        "jobctl retry 42 43    # or: jobctl retry --dead --kind http",
    ),
    ("cancel", "jobctl cancel 42"),
    (
        "delete",
        "jobctl delete --state dead --kind http --until 30d    # a dry run; add --yes to act",
    ),
    (
        "destinations",
        "jobctl destinations    # rate, tokens, in flight, waiting, held until and why",
    ),
    (
        "hold",
        "jobctl hold shopify --for 10m --reason \"maintenance window\"",
    ),
    ("release", "jobctl release shopify"),
    ("stats", "jobctl stats --format prometheus"),
    ("backup", "jobctl backup /var/backups/jobs-$(date +%F).db"),
    ("vacuum", "jobctl vacuum"),
    ("ping", "jobctl ping --socket /run/jobd/jobd.sock"),
    ("purge", "jobctl purge --state succeeded --older-than 7d"),
    ("migrate", "jobctl --db /var/lib/jobd/jobs.db migrate"),
    (
        "copy",
        "jobctl --db /var/lib/jobd/jobs.db copy --to postgresql://jobd@db.internal/jobd",
    ),
    ("check", "jobctl --config /etc/jobd/jobd.toml check --json"),
    ("sync-state", "jobctl sync-state --reset shopify_orders"),
    (
        "top",
        "jobctl top    # q quits; `jobctl top | cat` prints one snapshot",
    ),
    (
        "completions",
        "jobctl completions bash > /usr/share/bash-completion/completions/jobctl",
    ),
    ("manpage", "jobctl manpage --dir /usr/share/man/man1"),
    ("pause", "jobctl pause reports"),
    ("resume", "jobctl resume reports"),
    ("run-now", "jobctl run-now 42"),
];

/// The example of a subcommand, if it has one.
pub fn example(name: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
}

/// jobctl's clap command with every subcommand's example attached as `after_help`.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command().after_help(
        "Examples:\n  jobctl list --state dead\n  jobctl --json show 42\n  jobctl top\n\n\
         Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 database unavailable.",
    );
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        if let Some(text) = example(&name) {
            cmd = cmd.mut_subcommand(&name, |sub| sub.after_help(format!("Example:\n  {text}")));
        }
    }
    cmd
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut command(), "jobctl", out);
}

/// Writes the man page of jobctl (every subcommand named, with its example) to `out`.
pub fn manpage(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command()).render(out)
}

/// Writes jobctl.1 and one jobctl-SUBCOMMAND.1 per subcommand into `dir`; returns the
/// files written.
pub fn manpages_to(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let mut written = vec![clap_mangen::Man::new(cmd.clone()).generate_to(dir)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_an_example_and_every_argument_help() {
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            match sub.get_after_help().map(|h| h.to_string()) {
                Some(h) if h.contains("jobctl ") => {}
                _ => missing.push(format!("{name}: no example")),
            }
            for arg in sub.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{name} {}: no help", arg.get_id()));
                }
            }
        }
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() && !arg.is_hide_set() {
                missing.push(format!("jobctl {}: no help", arg.get_id()));
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn the_state_filter_lists_the_states() {
        let mut cmd = command();
        cmd.build();
        let list = cmd.find_subcommand("list").expect("list");
        let state = list
            .get_arguments()
            .find(|a| a.get_id() == "state")
            .expect("--state");
        let help = state.get_help().map(|h| h.to_string()).unwrap_or_default();
        for s in crate::job::JobState::ALL {
            assert!(help.contains(s.as_str()), "{help}");
        }
    }
}

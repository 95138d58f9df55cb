//! The front door: what the README and docs show matches what the binaries do.

use crate::common::JOBCTL;
use std::path::Path;
use std::process::Command;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The kinds the real jobctl names when it refuses an unknown one.
fn known_kinds_message() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(JOBCTL)
        .current_dir(dir.path())
        .env_remove("JOBD_CONFIG")
        .args(["--db", "jobs.db", "enqueue", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let start = stderr.find("unknown kind 'x'").expect(&stderr);
    stderr[start..].trim_end().to_string()
}

#[test]
fn the_readme_kinds_table_is_one_table_with_a_row_for_every_kind() {
    let readme = read("README.md");
    let section = readme
        .split("## Job kinds")
        .nth(1)
        .expect("a Job kinds section");
    let table: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .collect();
    let message = known_kinds_message();
    let known = message
        .split("(known: ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .expect(&message);
    for kind in known.split(", ") {
        let row = format!("| `{kind}` |");
        assert!(
            table.iter().any(|line| line.starts_with(&row)),
            "kind {kind} has no row in the README's kinds table (a blank line cuts it?)"
        );
    }
}

#[test]
fn the_readme_quotes_the_unknown_kind_error_as_it_is() {
    let readme = read("README.md");
    let message = known_kinds_message();
    assert!(
        readme.contains(&format!("`{message}`")),
        "the README should quote `{message}`"
    );
}

#[test]
fn the_readme_and_docs_stand_on_their_own() {
    let mut texts = vec![("README.md".to_string(), read("README.md"))];
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
            texts.push((name.clone(), read(&name)));
        }
    }
    for (name, text) in texts {
        assert!(
            !text.contains("../shared") && !text.contains("DESIGN.md"),
            "{name} cites a file outside the repository"
        );
    }
}

#[test]
fn the_protocol_examples_show_the_local_and_the_systemd_socket() {
    let protocol = read("docs/protocol.md");
    assert!(protocol.contains("UNIX-CONNECT:./var/run/jobd.sock"));
    assert!(protocol.contains("/run/jobd/jobd.sock"));
}

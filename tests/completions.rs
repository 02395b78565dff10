//! `clarity-reconcile completions bash|zsh|fish`, loaded into the real shells: each script
//! parses, and bash and fish complete a command name and an option's values from it (zsh's
//! completion system needs an interactive terminal, so zsh is checked for syntax and content).

mod support;

use std::path::Path;
use std::process::Command;

fn script(shell: &str, dir: &Path) -> std::path::PathBuf {
    let out = Command::new(support::clarity_bin())
        .args(["completions", shell])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    let path = dir.join(format!("clarity-reconcile.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn shell(program: &str) -> Option<std::path::PathBuf> {
    support::require_program(program)
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completes_commands_and_option_values() {
    let Some(bash) = shell("bash") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = script("bash", dir.path());
    run(&bash, &["-n", file.to_str().unwrap()]);
    let complete = |words: &str, cword: usize| {
        let last = words.split(' ').next_back().unwrap().to_string();
        let prev = words
            .split(' ')
            .rev()
            .nth(1)
            .unwrap_or("clarity-reconcile")
            .to_string();
        run(
            &bash,
            &[
                "-c",
                &format!(
                    "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                     COMP_POINT=${{#COMP_LINE}}; _clarity__reconcile clarity-reconcile '{last}' '{prev}'; \
                     printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    file.display()
                ),
            ],
        )
    };
    let commands = complete("clarity-reconcile val", 1);
    assert_eq!(commands.trim(), "validate", "{commands}");
    let outputs = complete("clarity-reconcile --output ''", 2);
    for v in ["text", "json", "markdown"] {
        assert!(outputs.lines().any(|l| l == v), "{v} missing: {outputs}");
    }
}

#[test]
fn fish_completes_commands_and_option_values() {
    let Some(fish) = shell("fish") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = script("fish", dir.path());
    run(&fish, &["--no-execute", file.to_str().unwrap()]);
    let complete = |line: &str| {
        run(
            &fish,
            &[
                "-c",
                &format!("source {}; complete -C '{line}'", file.display()),
            ],
        )
    };
    let commands = complete("clarity-reconcile hist");
    assert!(commands.starts_with("history\t"), "{commands}");
    let outputs = complete("clarity-reconcile --output=");
    for v in ["--output=text", "--output=json", "--output=markdown"] {
        assert!(
            outputs.lines().any(|l| l.starts_with(v)),
            "{v} missing: {outputs}"
        );
    }
}

#[test]
fn zsh_script_parses_and_names_every_command() {
    let Some(zsh) = shell("zsh") else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = script("zsh", dir.path());
    run(&zsh, &["-n", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("#compdef clarity-reconcile"),
        "{}",
        &text[..80]
    );
    for command in [
        "validate",
        "drift",
        "history",
        "rollback",
        "secret",
        "completions",
    ] {
        assert!(text.contains(&format!("'{command}:")), "{command} missing");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_naming_the_choices() {
    let out = Command::new(support::clarity_bin())
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
}

//! `iiot auth …`: manages the auth file while `iiot` runs (it re-reads the file within a
//! second). Each change is a read-modify-write under a lock file next to the auth file, so
//! two commands at once do not lose each other's change.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::Role;
use super::store::{
    AuthFile, TokenEntry, UserEntry, check_name, hash_password, new_token, sha256_hex,
};

/// One `iiot auth` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Adds a user whose password is the first line of stdin.
    AddUser {
        /// Login name.
        name: String,
        /// What the user may do.
        role: Role,
    },
    /// Adds an API token and prints it once.
    AddToken {
        /// What it is for.
        name: String,
        /// What its bearer may do.
        role: Role,
    },
    /// Lists users and tokens (never their hashes).
    List,
    /// Removes a user or token.
    Remove {
        /// Its name.
        name: String,
    },
}

/// Why an action failed: a usage error (exit 2) with its one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

/// What an action printed: `stdout` (the new token, or the list) and a note for stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// For stdout.
    pub stdout: String,
    /// For stderr.
    pub note: String,
}

/// Runs `action` on the auth file at `path`, reading a password from `stdin` if it needs one.
pub fn run(path: &Path, action: &Action, stdin: &mut dyn BufRead) -> Result<Outcome, CliError> {
    if let Action::List = action {
        let file = AuthFile::read(path).map_err(|e| CliError(e.to_string()))?;
        return Ok(Outcome {
            stdout: list(&file),
            note: String::new(),
        });
    }
    let _lock = lock(path)?;
    let mut file = AuthFile::read(path).map_err(|e| CliError(e.to_string()))?;
    let outcome = match action {
        Action::AddUser { name, role } => {
            fresh_name(&file, name)?;
            let password = read_password(stdin)?;
            file.users.push(UserEntry {
                name: name.clone(),
                role: *role,
                password: hash_password(&password),
            });
            Outcome {
                stdout: String::new(),
                note: format!("added user {name} ({})", role.as_str()),
            }
        }
        Action::AddToken { name, role } => {
            fresh_name(&file, name)?;
            let token = new_token();
            file.tokens.push(TokenEntry {
                name: name.clone(),
                role: *role,
                sha256: sha256_hex(&token),
            });
            Outcome {
                stdout: format!("{token}\n"),
                note: format!(
                    "added token {name} ({}); it is shown only this once",
                    role.as_str()
                ),
            }
        }
        Action::Remove { name } => {
            if !file.remove(name) {
                return Err(CliError(format!(
                    "no user or token is called {name:?} in {}",
                    path.display()
                )));
            }
            Outcome {
                stdout: String::new(),
                note: format!("removed {name}"),
            }
        }
        Action::List => unreachable!("answered above"),
    };
    file.write(path).map_err(|e| CliError(e.to_string()))?;
    Ok(outcome)
}

fn fresh_name(file: &AuthFile, name: &str) -> Result<(), CliError> {
    check_name(name).map_err(CliError)?;
    if file.has(name) {
        return Err(CliError(format!(
            "a user or token is already called {name:?}: remove it first (`iiot auth remove {name}`)"
        )));
    }
    Ok(())
}

fn read_password(stdin: &mut dyn BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| CliError(format!("reading the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.chars().count() < 8 {
        return Err(CliError(
            "the password (first line of stdin) must have at least 8 characters".into(),
        ));
    }
    Ok(password)
}

fn list(file: &AuthFile) -> String {
    let mut out = String::from("NAME\tKIND\tROLE\n");
    for u in &file.users {
        out.push_str(&format!("{}\tuser\t{}\n", u.name, u.role.as_str()));
    }
    for t in &file.tokens {
        out.push_str(&format!("{}\ttoken\t{}\n", t.name, t.role.as_str()));
    }
    out
}

/// Holds `<auth file>.lock` until dropped.
fn lock(path: &Path) -> Result<File, CliError> {
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| CliError(format!("{}: {e}", lock_path.display())))?;
    f.lock()
        .map_err(|e| CliError(format!("{}: {e}", lock_path.display())))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::Accounts;

    #[test]
    fn users_and_tokens_are_added_listed_and_removed() {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("sub/auth.toml");
        let add = Action::AddUser {
            name: "alice".into(),
            role: Role::Operator,
        };
        let out = run(&path, &add, &mut &b"long enough\n"[..]).expect("ok");
        assert!(out.stdout.is_empty());
        let again = run(&path, &add, &mut &b"long enough\n"[..]).expect_err("refused");
        assert!(again.0.contains("already"), "{again}");
        let short = Action::AddUser {
            name: "bob".into(),
            role: Role::Viewer,
        };
        assert!(run(&path, &short, &mut &b"short\n"[..]).is_err());
        let token = Action::AddToken {
            name: "grafana".into(),
            role: Role::Viewer,
        };
        let out = run(&path, &token, &mut &b""[..]).expect("ok");
        let printed = out.stdout.trim();
        assert!(
            printed.starts_with("iiot_") && printed.len() == 69,
            "{printed}"
        );
        let file = AuthFile::read(&path).expect("ok");
        let text = std::fs::read_to_string(&path).expect("ok");
        assert!(!text.contains(printed), "the token itself is never stored");
        assert!(!text.contains("long enough"));
        assert_eq!(
            Accounts::new(&file, &[]).token(printed),
            Some(("grafana", Role::Viewer))
        );
        let listed = run(&path, &Action::List, &mut &b""[..]).expect("ok").stdout;
        assert_eq!(
            listed,
            "NAME\tKIND\tROLE\nalice\tuser\toperator\ngrafana\ttoken\tviewer\n"
        );
        let rm = Action::Remove {
            name: "grafana".into(),
        };
        run(&path, &rm, &mut &b""[..]).expect("ok");
        assert!(run(&path, &rm, &mut &b""[..]).is_err());
        assert_eq!(AuthFile::read(&path).expect("ok").tokens.len(), 0);
    }
}

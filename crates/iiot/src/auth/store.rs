//! The auth file (`AUTH_FILE`, default `DATA_DIR/auth.toml`): users with argon2id password
//! hashes and API tokens stored as SHA-256 digests, read into the lookup tables requests are
//! checked against ([`Accounts`]), and written back atomically by `iiot auth`.
//!
//! ```toml
//! [[users]]
//! name = "alice"
//! role = "operator"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//!
//! [[tokens]]
//! name = "grafana"
//! role = "viewer"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! A token is `iiot_` and 64 hex digits (256 random bits), so a plain SHA-256 digest is as
//! good as a slow hash for it, and checking one is a hash-map lookup. Passwords are chosen by
//! people, so they get argon2id; that cost is paid only at login.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Role;

/// What the auth file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// People who log in to the dashboard (or use HTTP Basic-less APIs through a session).
    #[serde(default)]
    pub users: Vec<UserEntry>,
    /// API tokens for programs (`Authorization: Bearer iiot_…`).
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Login name, unique among users and tokens.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The argon2id hash of the password (PHC string).
    pub password: String,
}

/// One API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// What the token is for, unique among users and tokens.
    pub name: String,
    /// What its bearer may do.
    pub role: Role,
    /// SHA-256 of the token, lower-case hex.
    pub sha256: String,
}

/// Why the auth file could not be used. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The text is not an auth file.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (a TOML error with its line, or a duplicate name).
        why: String,
    },
}

impl AuthFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<AuthFile, FileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            // Missing, or under a DATA_DIR that is a file (which history reports as such).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(AuthFile::default());
            }
            Err(source) => {
                return Err(FileError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        let invalid = |why: String| FileError::Invalid {
            path: path.into(),
            why,
        };
        // TOML errors quote the offending line, which may hold a hash: keep only the message.
        let file: AuthFile =
            toml::from_str(&text).map_err(|e| invalid(e.message().trim().to_string()))?;
        file.check().map_err(invalid)?;
        Ok(file)
    }

    /// Names are unique, hashes well-formed.
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let names = self
            .users
            .iter()
            .map(|u| &u.name)
            .chain(self.tokens.iter().map(|t| &t.name));
        for name in names {
            check_name(name)?;
            if !seen.insert(name) {
                return Err(format!("the name {name:?} is used twice"));
            }
        }
        for u in &self.users {
            let ok =
                PasswordHash::new(&u.password).is_ok_and(|h| h.algorithm.as_str() == "argon2id");
            if !ok {
                return Err(format!(
                    "user {:?}: password is not an argon2id hash",
                    u.name
                ));
            }
        }
        for t in &self.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("token {:?}: sha256 is not 64 hex digits", t.name));
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temporary file, fsync, rename, directory fsync), readable by
    /// its owner only.
    pub fn write(&self, path: &Path) -> Result<(), FileError> {
        let io = |source| FileError::Io {
            path: path.into(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = toml::to_string(self).map_err(|e| FileError::Invalid {
            path: path.into(),
            why: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(HEADER.as_bytes()).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Whether anyone at all can sign in.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.tokens.is_empty()
    }

    /// Removes the user or token called `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.users.len() + self.tokens.len();
        self.users.retain(|u| u.name != name);
        self.tokens.retain(|t| t.name != name);
        before != self.users.len() + self.tokens.len()
    }

    /// Whether a user or token is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name) || self.tokens.iter().any(|t| t.name == name)
    }
}

const HEADER: &str = "# Users and API tokens of iiot. Managed with `iiot auth …`; changes apply \
without a restart.\n# Passwords are argon2id hashes and tokens SHA-256 digests: this file holds \
no secret in the clear.\n\n";

/// Names: 1 to 64 of `A-Z a-z 0-9 . _ @ -`, so they print safely in logs and on alerts.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ @ -"
        ))
    }
}

/// The argon2id hash of `password` (the crate's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    // Encoding 16 bytes cannot fail; hashing with default parameters cannot either.
    let salt = SaltString::encode_b64(&salt).expect("a 16-byte salt encodes");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters")
        .to_string()
}

/// Whether `password` matches the PHC `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A new API token: `iiot_` and 64 hex digits.
pub fn new_token() -> String {
    format!("iiot_{}", random_hex())
}

/// 256 random bits as 64 hex digits (tokens, session ids, CSRF tokens).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// SHA-256 of `text`, lower-case hex.
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The auth file as lookup tables.
#[derive(Debug, Default)]
pub struct Accounts {
    /// Token digest → (name, role).
    tokens: HashMap<String, (String, Role)>,
    /// User name → (password hash, role).
    users: HashMap<String, (String, Role)>,
}

impl Accounts {
    /// The tables of `file`, plus `extra` tokens `(name, token, role)` from the configuration.
    pub fn new(file: &AuthFile, extra: &[(String, String, Role)]) -> Accounts {
        let mut a = Accounts::default();
        for t in &file.tokens {
            a.tokens
                .insert(t.sha256.to_ascii_lowercase(), (t.name.clone(), t.role));
        }
        for (name, token, role) in extra {
            a.tokens.insert(sha256_hex(token), (name.clone(), *role));
        }
        for u in &file.users {
            a.users.insert(u.name.clone(), (u.password.clone(), u.role));
        }
        a
    }

    /// Whether anyone can sign in.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }

    /// The name and role of `token`'s bearer.
    pub fn token(&self, token: &str) -> Option<(&str, Role)> {
        self.tokens
            .get(&sha256_hex(token))
            .map(|(n, r)| (n.as_str(), *r))
    }

    /// The name and role of the token whose SHA-256 is `digest`.
    pub fn token_digest(&self, digest: &str) -> Option<(&str, Role)> {
        self.tokens.get(digest).map(|(n, r)| (n.as_str(), *r))
    }

    /// The password hash and role of user `name`.
    pub fn user(&self, name: &str) -> Option<(&str, Role)> {
        self.users.get(name).map(|(h, r)| (h.as_str(), *r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_and_a_wrong_one_does_not() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horse "));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn the_file_round_trips_and_refuses_duplicates_and_junk() {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("auth.toml");
        assert!(AuthFile::read(&path).expect("ok").is_empty());
        let token = new_token();
        let file = AuthFile {
            users: vec![UserEntry {
                name: "alice".into(),
                role: Role::Operator,
                password: hash_password("pw"),
            }],
            tokens: vec![TokenEntry {
                name: "grafana".into(),
                role: Role::Viewer,
                sha256: sha256_hex(&token),
            }],
        };
        file.write(&path).expect("ok");
        let back = AuthFile::read(&path).expect("ok");
        assert_eq!(back, file);
        let accounts = Accounts::new(&back, &[]);
        assert_eq!(accounts.token(&token), Some(("grafana", Role::Viewer)));
        assert_eq!(accounts.token("iiot_wrong"), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("ok").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut twice = file.clone();
        twice.tokens[0].name = "alice".into();
        twice.write(&path).expect("ok");
        let e = AuthFile::read(&path).expect_err("refused").to_string();
        assert!(e.contains("used twice"), "{e}");
        std::fs::write(
            &path,
            "[[users]]\nname = \"bob\"\nrole = \"root\"\npassword = \"x\"\n",
        )
        .expect("ok");
        let e = AuthFile::read(&path).expect_err("refused").to_string();
        assert!(e.contains("root") || e.contains("variant"), "{e}");
    }

    #[test]
    fn names_are_printable_words() {
        assert!(check_name("alice@plant-1.example").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("x\n").is_err());
    }
}

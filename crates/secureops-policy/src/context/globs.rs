//! Credential paths: globs such as `~/.aws/credentials`, `**/.env`,
//! `~/.ssh/id_*`. `~` is the home of the user the agent runs as; `*` stays
//! within one path segment; a glob that starts with `**/` matches in any
//! folder.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A glob in `[context] credential_paths` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential path {pattern:?}: {reason}")]
pub struct GlobError {
    /// The glob as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The compiled credential globs.
#[derive(Debug, Clone)]
pub struct CredentialGlobs {
    set: GlobSet,
    patterns: Vec<String>,
}

impl CredentialGlobs {
    /// Compiles `patterns`, expanding a leading `~` to `home`. Relative
    /// globs other than `**/…` are refused: they would depend on the
    /// proxy's working folder.
    pub fn new<S: AsRef<str>>(patterns: &[S], home: &Path) -> Result<Self, GlobError> {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::new();
        for p in patterns {
            let raw = p.as_ref();
            let err = |reason: &str| GlobError {
                pattern: raw.to_owned(),
                reason: reason.to_owned(),
            };
            let expanded = if let Some(rest) = raw.strip_prefix("~/") {
                format!("{}/{rest}", home.display())
            } else if raw.starts_with('/') || raw.starts_with("**/") {
                raw.to_owned()
            } else {
                return Err(err("must be absolute, start with ~/ or with **/"));
            };
            let glob: Glob = GlobBuilder::new(&expanded)
                .literal_separator(true)
                .build()
                .map_err(|e| err(&e.kind().to_string()))?;
            builder.add(glob);
            kept.push(raw.to_owned());
        }
        let set = builder.build().map_err(|e| GlobError {
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self { set, patterns: kept })
    }

    /// The glob (as written) that `path` matches, if any.
    pub fn matches(&self, path: &Path) -> Option<&str> {
        self.set.matches(path).first().map(|&i| self.patterns[i].as_str())
    }

    /// True when no glob is configured.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs() -> CredentialGlobs {
        CredentialGlobs::new(
            &["~/.aws/credentials", "**/.env", "~/.ssh/id_*"],
            Path::new("/home/dev"),
        )
        .unwrap()
    }

    #[test]
    fn matches_table() {
        let g = globs();
        let cases = [
            ("/home/dev/.aws/credentials", Some("~/.aws/credentials")),
            ("/home/dev/project/.env", Some("**/.env")),
            ("/tmp/x/y/z/.env", Some("**/.env")),
            ("/.env", Some("**/.env")),
            ("/home/dev/.ssh/id_ed25519", Some("~/.ssh/id_*")),
            ("/home/dev/.ssh/id_ed25519.pub", Some("~/.ssh/id_*")),
            ("/home/dev/.ssh/known_hosts", None),
            ("/home/dev/.ssh/sub/id_rsa", None),
            ("/home/other/.aws/credentials", None),
            ("/home/dev/project/.env.example", None),
            ("/home/dev/project/x.env", None),
        ];
        for (path, want) in cases {
            assert_eq!(g.matches(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn relative_globs_are_refused() {
        let e = CredentialGlobs::new(&[".env"], Path::new("/h")).unwrap_err();
        assert!(e.to_string().contains(".env"));
        assert!(CredentialGlobs::new(&["/a/[b"], Path::new("/h")).is_err());
    }
}

//! Learn mode (`secureops run --learn`): what the guard does with a
//! destination that no rule admits.
//!
//! A switch of the policy, not a rule: the decision points consult it only
//! where they would otherwise refuse for want of a rule, after credential
//! taint has had its say, and the enforcement point still vets every
//! address (destination safety) after the decision. An allow-all rule
//! would instead sit beside the real rules and could be mistaken for one
//! (or copied into a config).

/// The phrase that ends the reason of every refusal for want of a rule
/// (proxy and DNS alike): `"{dest} is not in the egress allowlist"`. The
/// run summary and `policy suggest` recognise policy refusals by it.
pub const NOT_LISTED: &str = "is not in the egress allowlist";

/// How every reason of an entry let through by learn mode starts.
pub const LEARN_PREFIX: &str = "learn:";

/// What happens to a destination no rule admits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Refused (the default and the only mode outside `run --learn`).
    #[default]
    Enforce,
    /// Let through and recorded as learned.
    Learn,
}

impl Mode {
    /// The reason when nothing admits `dest` (`host:port`, or a DNS name):
    /// `Err` with the refusal's reason when enforcing, `Ok` with the
    /// `learn:` reason of an entry let through when learning.
    pub fn unlisted(self, dest: &str) -> Result<String, String> {
        match self {
            Mode::Enforce => Err(format!("{dest} {NOT_LISTED}")),
            Mode::Learn => Ok(format!("{LEARN_PREFIX} {dest} {NOT_LISTED}; let through by --learn")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcing_refuses_and_learning_lets_through_with_its_prefix() {
        assert_eq!(
            Mode::Enforce.unlisted("a.test:443"),
            Err("a.test:443 is not in the egress allowlist".to_owned())
        );
        let learned = Mode::Learn.unlisted("a.test:443").unwrap_or_default();
        assert!(learned.starts_with(LEARN_PREFIX), "{learned}");
        assert!(learned.contains("a.test:443"), "{learned}");
        assert_eq!(Mode::default(), Mode::Enforce);
    }
}

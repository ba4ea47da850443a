//! Process context (PRODUCT.md B.3 "Process context"): which credential
//! files count as secrets, which processes read one a moment ago, and how
//! far that taint reaches. Pure data and logic; the enforcement point feeds
//! it file-open events and process facts read from the kernel.

mod globs;
mod taint;

pub use globs::{CredentialGlobs, GlobError};
pub use taint::{ProcessFacts, Taint, TaintScope, TaintStore};

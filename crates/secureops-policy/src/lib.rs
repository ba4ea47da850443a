//! SecureOps policy: what the egress guard lets out (PRODUCT.md B.3).
//!
//! Pure functions and data, no I/O, so the proxy, the DNS sinkhole and
//! `secureops check` share one answer and tests need no sockets.
//!
//! - [`normalize`]: one canonical form for hosts ([`normalize_host`]):
//!   lower case, punycode, no trailing dot, non-canonical numeric hosts refused.
//! - [`rules`]: the rule grammar ([`Rule`]: `example.com:8443`,
//!   `*.example.com`, `[2001:db8::1]:22`, `10.0.0.0/8:5432`).
//! - [`allowlist`]: rules compiled for lookups whose cost does not grow
//!   with the rule count ([`Allowlist::find`], [`Allowlist::resolves`]).
//! - [`destination`]: destination safety: refuse addresses that are not
//!   globally reachable unless listed ([`vet`], [`special_purpose`]).
//! - [`context`]: process context: credential globs and the taint store
//!   (who read a secret a moment ago, and how far that reaches).
//! - [`presets`]: `@NAME` rule sets (`@pypi`, `@github`, ...), compiled in.
//! - [`lint`]: the wildcard lint against the Public Suffix List.
//! - [`suggest`]: allowlist rules for what a log shows refused or learned.
//! - [`learn`]: learn mode ([`Mode`]): what happens to a destination no
//!   rule admits (refused, or let through and recorded by `run --learn`).
//! - [`cidr`]: strict CIDR text ([`CidrError`]) and the prefix table
//!   behind CIDR rules and private destinations.

#![forbid(unsafe_code)]

pub mod allowlist;
pub mod cidr;
pub mod context;
pub mod destination;
pub mod learn;
pub mod lint;
pub mod normalize;
pub mod presets;
pub mod rules;
pub mod suggest;

pub use allowlist::{Allowlist, RuleListError};
pub use cidr::CidrError;
pub use context::{CredentialGlobs, GlobError, ProcessFacts, Taint, TaintScope, TaintStore};
pub use destination::{PrivateDestinationError, PrivateDestinations, UnsafeDestination, special_purpose, vet};
pub use learn::Mode;
pub use normalize::{Host, HostError, normalize_host};
pub use rules::{PortSpec, Rule, RuleError, RuleHost};

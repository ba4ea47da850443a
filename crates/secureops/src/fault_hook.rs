//! A fault-injection hook for the tests of fail-closed behaviour (issue
//! 20): makes the policy decision point panic or stall for one host.
//!
//! Only debug builds (`cfg(debug_assertions)`, what `cargo test` runs)
//! read `SECUREOPS_TEST_PDP_FAULT`; a release build has no hook at all,
//! not even the variable's name. Whatever it is set to, a fault can only
//! end in a refusal, never in an open connection.
//!
//! `SECUREOPS_TEST_PDP_FAULT=panic:HOST` panics on every decision about
//! HOST; `stall:HOST` blocks the decision for 30 s. Other hosts go to the
//! real decision point.

use std::sync::Arc;

use secureops_proxy::PolicyDecisionPoint;

/// `pdp`, wrapped in the configured fault when a debug build runs with
/// `SECUREOPS_TEST_PDP_FAULT` set; otherwise `pdp` unchanged.
#[cfg(debug_assertions)]
pub(crate) fn wrap(pdp: Arc<dyn PolicyDecisionPoint>) -> Arc<dyn PolicyDecisionPoint> {
    let Ok(spec) = std::env::var("SECUREOPS_TEST_PDP_FAULT") else {
        return pdp;
    };
    let fault = match spec.split_once(':') {
        Some(("panic", host)) => Fault::Panic(host.to_owned()),
        Some(("stall", host)) => Fault::Stall(host.to_owned()),
        _ => {
            eprintln!("secureops: warning: ignoring SECUREOPS_TEST_PDP_FAULT={spec:?} (panic:HOST or stall:HOST)");
            return pdp;
        }
    };
    eprintln!("secureops: warning: debug build with SECUREOPS_TEST_PDP_FAULT={spec}: the PDP fails on purpose");
    Arc::new(Faulty { inner: pdp, fault })
}

/// Release builds: no hook.
#[cfg(not(debug_assertions))]
pub(crate) fn wrap(pdp: Arc<dyn PolicyDecisionPoint>) -> Arc<dyn PolicyDecisionPoint> {
    pdp
}

#[cfg(debug_assertions)]
enum Fault {
    Panic(String),
    Stall(String),
}

#[cfg(debug_assertions)]
struct Faulty {
    inner: Arc<dyn PolicyDecisionPoint>,
    fault: Fault,
}

#[cfg(debug_assertions)]
impl PolicyDecisionPoint for Faulty {
    fn decide(
        &self,
        req: &secureops_proxy::ConnectionRequest,
    ) -> Result<secureops_proxy::Ruling, secureops_proxy::PdpError> {
        let host = req.host.to_string();
        match &self.fault {
            Fault::Panic(h) if *h == host => panic!("SECUREOPS_TEST_PDP_FAULT: panic on {host}"),
            Fault::Stall(h) if *h == host => std::thread::sleep(std::time::Duration::from_secs(30)),
            _ => {}
        }
        self.inner.decide(req)
    }
}

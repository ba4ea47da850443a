//! Escalation (PRODUCT.md B.5 step 4, `[escalation]`): a connection whose
//! ruling is `Escalate` is held while a person is asked. The broker keeps
//! the held requests; the control socket of the binary lists them and
//! carries the answers (`secureops pending | approve ID | deny ID`). No
//! answer within the timeout, a full queue or a stopping proxy is a
//! refusal: the only way through is a person's approval.
//!
//! `--remember` turns an answer into a rule for the rest of the run: a
//! remembered denial refuses later escalations to the same `host:port`
//! (from any program) at once; a remembered approval lets later
//! escalations of the same program to the same `host:port` through without
//! asking.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use secureops_audit::Via;
use tokio::sync::oneshot;

use crate::decision::{ConnectionRequest, host_port_host};

/// Default bound on requests held at once; beyond it an escalation is
/// refused without asking.
pub const MAX_PENDING: usize = 256;

/// One held request, as `secureops pending` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The id to answer with (`secureops approve ID`).
    pub id: u64,
    /// How long it has been held.
    pub age: Duration,
    /// The client's process id, when known.
    pub pid: Option<u32>,
    /// The client's executable, when known.
    pub exe: Option<String>,
    /// The destination host (IPv6 in brackets).
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Where the host was learned.
    pub via: Via,
    /// Why the policy escalated.
    pub reason: String,
}

/// How an escalation was answered by a person (now or earlier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByPerson {
    /// The id of the request the person answered.
    pub id: u64,
    /// The answer was given with `--remember`.
    pub remember: bool,
    /// The answer was remembered from an earlier request (this one was
    /// not shown to anyone).
    pub earlier: bool,
}

/// What became of an escalated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A person let it through.
    Approved(ByPerson),
    /// A person refused it.
    Denied(ByPerson),
    /// Nobody answered within the timeout.
    TimedOut(Duration),
    /// Too many requests were already held.
    Full(usize),
    /// The proxy is stopping.
    Closed,
}

impl Answer {
    /// Whether the request may go through.
    pub fn is_approved(&self) -> bool {
        matches!(self, Answer::Approved(_))
    }

    /// The reason recorded in the audit log and sent with a refusal:
    /// who decided (a person, or nobody in time) and why it was asked.
    pub fn describe(&self, asked_because: &str) -> String {
        let flag = |b: &ByPerson| if b.remember { " --remember" } else { "" };
        match self {
            Answer::Approved(b) if b.earlier => format!(
                "approved by a person earlier (secureops approve {}{}) ({asked_because})",
                b.id,
                flag(b)
            ),
            Answer::Approved(b) => {
                format!(
                    "approved by a person via secureops approve {}{} ({asked_because})",
                    b.id,
                    flag(b)
                )
            }
            Answer::Denied(b) if b.earlier => format!(
                "denied by a person earlier (secureops deny {}{}) ({asked_because})",
                b.id,
                flag(b)
            ),
            Answer::Denied(b) => {
                format!(
                    "denied by a person via secureops deny {}{} ({asked_because})",
                    b.id,
                    flag(b)
                )
            }
            Answer::TimedOut(after) => format!(
                "escalated, but no answer within {} ms; refusing ({asked_because})",
                after.as_millis()
            ),
            Answer::Full(n) => {
                format!("escalated, but {n} requests already wait for a person; refusing ({asked_because})")
            }
            Answer::Closed => format!("escalated, but the proxy is stopping; refusing ({asked_because})"),
        }
    }
}

/// Why an answer could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No request with that id is held (already answered, timed out, its
    /// client went away, or it never existed).
    #[error("no pending request {0} (already answered, timed out, or never existed)")]
    Unknown(u64),
}

struct Held {
    since: Instant,
    request: PendingRequest,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    held: BTreeMap<u64, Held>,
    /// `(host, port)` → the id of the remembered denial.
    denied: HashMap<(String, u16), u64>,
    /// `(exe, host, port)` → the id of the remembered approval.
    approved: HashMap<(Option<String>, String, u16), u64>,
    closed: bool,
}

/// The broker between held connections and the person answering them.
pub struct Escalations {
    timeout: Duration,
    max_pending: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for Escalations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escalations")
            .field("timeout", &self.timeout)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

/// What an answer carries from the control socket to the held connection.
type Reply = (bool, ByPerson);

impl Escalations {
    /// A broker whose requests are refused after `timeout` without an
    /// answer, holding at most `max_pending` at once.
    pub fn new(timeout: Duration, max_pending: usize) -> Self {
        Self {
            timeout,
            max_pending,
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
        }
    }

    /// How long a request waits for a person.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `req` until a person answers, the timeout passes or the
    /// broker closes. Dropping the future (the client went away) withdraws
    /// the request.
    pub async fn ask(&self, req: &ConnectionRequest, reason: &str) -> Answer {
        let host = host_port_host(&req.host);
        let (id, mut rx) = {
            let mut s = self.lock();
            if s.closed {
                return Answer::Closed;
            }
            if let Some(&id) = s.denied.get(&(host.clone(), req.port)) {
                return Answer::Denied(ByPerson {
                    id,
                    remember: true,
                    earlier: true,
                });
            }
            if let Some(&id) = s.approved.get(&(req.exe.clone(), host.clone(), req.port)) {
                return Answer::Approved(ByPerson {
                    id,
                    remember: true,
                    earlier: true,
                });
            }
            if s.held.len() >= self.max_pending {
                return Answer::Full(s.held.len());
            }
            let id = s.next_id;
            s.next_id += 1;
            let (tx, rx) = oneshot::channel::<Reply>();
            let request = PendingRequest {
                id,
                age: Duration::ZERO,
                pid: req.pid,
                exe: req.exe.clone(),
                host,
                port: req.port,
                via: req.via,
                reason: reason.to_owned(),
            };
            s.held.insert(
                id,
                Held {
                    since: Instant::now(),
                    request,
                    reply: tx,
                },
            );
            (id, rx)
        };
        let withdraw = Withdraw { broker: self, id };
        let reply = match tokio::time::timeout(self.timeout, &mut rx).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(_)) => None,
            Err(_) => {
                // An answer given just as time ran out still counts: it
                // was sent under the lock, so it is in the channel now if
                // the request is no longer held.
                let gone = self.lock().held.remove(&id).is_none();
                match rx.try_recv() {
                    Ok(reply) if gone => Some(reply),
                    _ => {
                        drop(withdraw);
                        return Answer::TimedOut(self.timeout);
                    }
                }
            }
        };
        drop(withdraw);
        match reply {
            Some((true, by)) => Answer::Approved(by),
            Some((false, by)) => Answer::Denied(by),
            None => Answer::Closed,
        }
    }

    /// How many requests are held now.
    pub fn pending_count(&self) -> usize {
        self.lock().held.len()
    }

    /// The held requests, oldest first.
    pub fn pending(&self) -> Vec<PendingRequest> {
        let s = self.lock();
        s.held
            .values()
            .map(|h| PendingRequest {
                age: h.since.elapsed(),
                ..h.request.clone()
            })
            .collect()
    }

    /// Answers request `id`: `approve` lets it through, otherwise it is
    /// refused; `remember` applies the answer to later escalations for the
    /// rest of the run. Returns the request answered.
    pub fn answer(&self, id: u64, approve: bool, remember: bool) -> Result<PendingRequest, AnswerError> {
        let mut s = self.lock();
        let held = s.held.remove(&id).ok_or(AnswerError::Unknown(id))?;
        let mut request = held.request;
        request.age = held.since.elapsed();
        let by = ByPerson {
            id,
            remember,
            earlier: false,
        };
        // Sent under the lock: a request that times out at this moment
        // either is still held (and gets this answer) or is not (and this
        // is `Unknown`), never both.
        if held.reply.send((approve, by)).is_err() {
            return Err(AnswerError::Unknown(id));
        }
        if remember {
            if approve {
                s.approved
                    .insert((request.exe.clone(), request.host.clone(), request.port), id);
            } else {
                s.denied.insert((request.host.clone(), request.port), id);
            }
        }
        Ok(request)
    }

    /// Refuses everything held now and every later request (the proxy is
    /// stopping): each held connection records its refusal and ends.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.held.clear();
    }
}

/// Removes a held request when its connection stops waiting.
struct Withdraw<'a> {
    broker: &'a Escalations,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.broker.lock().held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(host: &str, port: u16, exe: &str) -> ConnectionRequest {
        ConnectionRequest {
            host: secureops_policy::normalize_host(host).unwrap_or_else(|e| panic!("{e}")),
            port,
            via: Via::Connect,
            peer: None,
            pid: Some(42),
            exe: Some(exe.to_owned()),
            process_detail: None,
        }
    }

    async fn wait_pending(b: &Escalations, n: usize) -> Vec<PendingRequest> {
        for _ in 0..500 {
            let p = b.pending();
            if p.len() >= n {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.pending()
    }

    #[tokio::test]
    async fn approve_and_deny_reach_the_waiter() {
        let b = Arc::new(Escalations::new(Duration::from_secs(10), 8));
        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.ask(&req("a.test", 443, "/bin/x"), "why").await });
        let p = wait_pending(&b, 1).await;
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].host.as_str(), p[0].port, p[0].pid), ("a.test", 443, Some(42)));
        let answered = b.answer(p[0].id, true, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answered.id, p[0].id);
        let got = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got,
            Answer::Approved(ByPerson {
                id: p[0].id,
                remember: false,
                earlier: false
            })
        );
        assert!(
            got.describe("why")
                .starts_with(&format!("approved by a person via secureops approve {}", p[0].id))
        );
        assert!(b.pending().is_empty());
        assert_eq!(b.answer(p[0].id, false, false), Err(AnswerError::Unknown(p[0].id)));

        let b2 = Arc::clone(&b);
        let waiter = tokio::spawn(async move { b2.ask(&req("a.test", 443, "/bin/x"), "why").await });
        let id = wait_pending(&b, 1).await[0].id;
        b.answer(id, false, false).unwrap_or_else(|e| panic!("{e}"));
        let got = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!got.is_approved());
        assert!(got.describe("why").starts_with("denied by a person via secureops deny"));
    }

    #[tokio::test]
    async fn timeout_full_and_close_refuse() {
        let b = Arc::new(Escalations::new(Duration::from_millis(30), 1));
        let got = b.ask(&req("a.test", 443, "/bin/x"), "why").await;
        assert_eq!(got, Answer::TimedOut(Duration::from_millis(30)));
        assert!(got.describe("why").contains("no answer within 30 ms"));
        assert!(b.pending().is_empty());

        let b = Arc::new(Escalations::new(Duration::from_secs(10), 1));
        let b2 = Arc::clone(&b);
        let first = tokio::spawn(async move { b2.ask(&req("a.test", 443, "/bin/x"), "why").await });
        wait_pending(&b, 1).await;
        assert_eq!(b.ask(&req("b.test", 443, "/bin/x"), "why").await, Answer::Full(1));
        b.close();
        assert_eq!(first.await.unwrap_or_else(|e| panic!("{e}")), Answer::Closed);
        assert_eq!(b.ask(&req("a.test", 443, "/bin/x"), "why").await, Answer::Closed);
    }

    #[tokio::test]
    async fn remembered_answers_apply_later() {
        let b = Arc::new(Escalations::new(Duration::from_secs(10), 8));
        let b2 = Arc::clone(&b);
        let w = tokio::spawn(async move { b2.ask(&req("evil.test", 443, "/bin/x"), "why").await });
        let id = wait_pending(&b, 1).await[0].id;
        b.answer(id, false, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(!w.await.unwrap_or_else(|e| panic!("{e}")).is_approved());
        // Any program, same destination: refused without asking.
        let got = b.ask(&req("evil.test", 443, "/bin/y"), "why").await;
        assert_eq!(
            got,
            Answer::Denied(ByPerson {
                id,
                remember: true,
                earlier: true
            })
        );
        assert!(got.describe("why").contains("secureops deny"));

        let b2 = Arc::clone(&b);
        let w = tokio::spawn(async move { b2.ask(&req("ok.test", 443, "/bin/x"), "why").await });
        let id = wait_pending(&b, 1).await[0].id;
        b.answer(id, true, true).unwrap_or_else(|e| panic!("{e}"));
        assert!(w.await.unwrap_or_else(|e| panic!("{e}")).is_approved());
        assert!(b.ask(&req("ok.test", 443, "/bin/x"), "why").await.is_approved());
        // Another program is still asked.
        let b2 = Arc::clone(&b);
        let w = tokio::spawn(async move { b2.ask(&req("ok.test", 443, "/bin/y"), "why").await });
        assert_eq!(wait_pending(&b, 1).await.len(), 1);
        w.abort();
        let _ = w.await;
        assert!(b.pending().is_empty(), "a withdrawn request leaves the list");
    }
}

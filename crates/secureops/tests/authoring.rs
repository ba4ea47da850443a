//! Policy authoring with the real binary: presets, the wildcard lint,
//! `policy suggest` on a log the real proxy wrote, and `check` on invalid
//! hosts (PRODUCT.md "Policy authoring").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Canary, HttpOrigin, Proxy, bin, curl, secureops, state_home};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// `check -c CONFIG DEST`: (exit code, stdout).
fn check(dir: &Path, config: &str, dest: &str) -> (i32, String) {
    let out = secureops(&["check", "-c", config, dest], dir);
    (out.status.code().unwrap_or(-1), text(&out).0)
}

#[test]
fn every_preset_parses_lints_clean_and_allows_a_known_host() {
    let dir = tempfile::tempdir().unwrap();
    // A host each tool really uses, from the preset files' sources.
    let known = [
        ("anthropic", "api.anthropic.com"),
        ("crates", "static.crates.io"),
        ("crates", "index.crates.io"),
        ("debian", "deb.debian.org:80"),
        ("docker", "registry-1.docker.io"),
        ("docker", "auth.docker.io"),
        ("github", "codeload.github.com"),
        ("github", "release-assets.githubusercontent.com"),
        ("go", "proxy.golang.org"),
        ("huggingface", "cas-server.xethub.hf.co"),
        ("maven", "repo.maven.apache.org"),
        ("npm", "registry.npmjs.org"),
        ("openai", "api.openai.com"),
        ("pypi", "files.pythonhosted.org"),
        ("rubygems", "index.rubygems.org"),
        ("ubuntu", "us.archive.ubuntu.com:80"),
    ];
    let listing = secureops(&["presets"], dir.path());
    let (list, _) = text(&listing);
    assert!(listing.status.success());
    assert_eq!(list.lines().count(), 13, "{list}");
    for (name, host) in known {
        assert!(list.lines().any(|l| l.starts_with(&format!("@{name} "))), "{list}");
        let rules = secureops(&["presets", name], dir.path());
        let (rules, _) = text(&rules);
        assert!(rules.lines().count() >= 1, "@{name}");
        let config = write(
            dir.path(),
            "c.toml",
            &format!("[network]\negress_allowlist = [\"@{name}\"]\n"),
        );
        let validate = secureops(&["config", "validate", &config], dir.path());
        let (stdout, stderr) = text(&validate);
        assert!(validate.status.success(), "@{name}: {stderr}");
        assert!(!stdout.contains("warning"), "@{name}: {stdout}");
        let (code, out) = check(dir.path(), &config, host);
        assert_eq!(
            (code, out.split_whitespace().next()),
            (0, Some("allow")),
            "@{name} {host}: {out}"
        );
        // The preset is no blanket: a host it does not name stays denied.
        let (code, out) = check(dir.path(), &config, "evil.test");
        assert_eq!(
            (code, out.split_whitespace().next()),
            (1, Some("deny")),
            "@{name}: {out}"
        );
    }
    // The same as flags, on the built-in default config.
    let out = secureops(&["check", "--allow", "@pypi", "files.pythonhosted.org"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out).0.starts_with("allow "));
    let out = secureops(&["check", "--allow", "@pypi", "evil.test"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let out = secureops(&["check", "--allow", "@nope", "files.pythonhosted.org"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("--allow \"@nope\": unknown preset"),
        "{:?}",
        text(&out)
    );
    let out = secureops(&["check", "--allow", "*.com", "x.com"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("--allow \"*.com\": \"com\" is a public suffix"),
        "{:?}",
        text(&out)
    );
    let unknown = secureops(&["presets", "nope"], dir.path());
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown).1.contains("unknown preset \"nope\""));
    // An unknown preset in a config is an error with its place.
    let config = write(
        dir.path(),
        "c.toml",
        "[network]\negress_allowlist = [\"@github\", \"@nope\"]\n",
    );
    let (_, err) = text(&secureops(&["config", "validate", &config], dir.path()));
    assert!(
        err.contains("c.toml:2:32: [network] egress_allowlist: unknown preset \"@nope\""),
        "{err}"
    );
}

#[test]
fn wildcard_lint_errors_with_place_warns_over_private_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    for (rule, suffix) in [("*.com", "com"), ("*.co.uk", "co.uk")] {
        let config = write(
            dir.path(),
            "c.toml",
            &format!("[network]\negress_allowlist = [\n  \"ok.test\",\n  \"{rule}\",\n]\n"),
        );
        let validate = secureops(&["config", "validate", &config], dir.path());
        let (_, err) = text(&validate);
        assert_eq!(validate.status.code(), Some(2), "{err}");
        let want = format!("c.toml:4:3: [network] egress_allowlist: \"{rule}\": \"{suffix}\" is a public suffix");
        assert!(err.contains(&want), "{err}");
        // Start-up refuses it too, before listening.
        let proxy = Command::new(bin())
            .args(["proxy", "-c", &config])
            .current_dir(dir.path())
            .env("XDG_STATE_HOME", state_home(dir.path()))
            .output()
            .unwrap();
        let (stdout, err) = text(&proxy);
        assert_eq!(proxy.status.code(), Some(2), "{err}");
        assert!(err.contains(&want) && !stdout.contains("listening"), "{stdout} {err}");
        let (code, out) = check(dir.path(), &config, "ok.test");
        assert_eq!(code, 2, "{out}");
        // As a flag: a clear message naming the flag; nothing runs.
        let marker = dir.path().join("ran");
        let run = secureops(
            &["run", "--allow", rule, "--", "touch", marker.to_str().unwrap()],
            dir.path(),
        );
        let (_, err) = text(&run);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("--allow \"{rule}\": \"{suffix}\" is a public suffix")),
            "{err}"
        );
        assert!(!marker.exists());
    }
    // Over a suffix anyone can publish under: a warning; validate exits 0.
    let config = write(
        dir.path(),
        "c.toml",
        "[network]\negress_allowlist = [\"*.github.io\", \"*.example.com\", \"*.s3.amazonaws.com\"]\n",
    );
    let validate = secureops(&["config", "validate", &config], dir.path());
    let (stdout, _) = text(&validate);
    assert!(validate.status.success(), "{stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    assert!(warnings[0].starts_with("warning: *.github.io: \"github.io\" is a public suffix where anyone can publish"));
    assert!(warnings[1].starts_with("warning: *.s3.amazonaws.com: "));
    // check shows it (on stderr; stdout stays the decision).
    let out = secureops(&["check", "-c", &config, "a.example.com"], dir.path());
    let (stdout, err) = text(&out);
    assert!(stdout.starts_with("allow "), "{stdout}");
    assert!(err.contains("warning: *.github.io: "), "{err}");
    // A clean wildcard: no warning anywhere.
    let config = write(
        dir.path(),
        "c.toml",
        "[network]\negress_allowlist = [\"*.example.com\"]\n",
    );
    let (stdout, _) = text(&secureops(&["config", "validate", &config], dir.path()));
    assert!(stdout.starts_with("ok ") && !stdout.contains("warning"), "{stdout}");
    // --allow over a private suffix: warned at start-up, and the run goes on.
    let run = secureops(&["run", "--weak", "--allow", "*.github.io", "--", "true"], dir.path());
    let (_, err) = text(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("warning: *.github.io: \"github.io\" is a public suffix where anyone can publish"),
        "{err}"
    );
}

#[test]
fn check_denies_invalid_hosts_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.toml",
        "[network]\negress_allowlist = [\"allowed.test\", \"allowed.test:*\"]\n",
    );
    // The control: the host itself is allowed.
    let (code, out) = check(dir.path(), &config, "allowed.test");
    assert_eq!(code, 0, "{out}");
    // One row per case, aligned by hand.
    #[rustfmt::skip]
    let cases = [
        ("a@allowed.test", "invalid host \"a@allowed.test\": invalid character '@'"),
        ("allowed.test@evil.test", "invalid character '@'"),
        ("allowed.test@evil.test:443", "invalid character '@'"),
        ("allowed .test", "invalid character ' '"),
        ("allowed.test\u{1}", "invalid character '\\u{1}'"),
        ("allowed.test\t", "invalid character '\\t'"),
        ("allowed.test\u{7f}", "invalid character '\\u{7f}'"),
        ("allowed.test%00", "invalid character '%'"),
        ("allowed.test:0", "invalid port"),
        ("allowed.test:99999", "invalid port"),
        ("[::1", "unclosed IPv6 bracket"),
        ("2130706433", "non-canonical numeric host"),
        ("allowed.test/x", "invalid character '/'"),
    ];
    for (dest, why) in cases {
        let (code, out) = check(dir.path(), &config, dest);
        assert_eq!(code, 1, "{dest:?}: {out}");
        assert!(out.starts_with("deny "), "{dest:?}: {out}");
        assert!(out.contains(why), "{dest:?}: {out}");
        assert_eq!(out.lines().count(), 1, "{dest:?}: {out}");
    }
}

/// The loop a user runs: the real proxy refuses, `policy suggest` reads
/// its log, the fragment goes into a config, `check` then allows each host.
#[test]
fn suggest_from_a_real_proxy_log() {
    let dir = tempfile::tempdir().unwrap();
    let canary = Canary::start();
    let origin = HttpOrigin::start();
    let port = canary.port();
    let many = ["a", "b", "c", "d", "e"].map(|l| format!("{l}.many.test"));
    let two = ["x.two.test", "y.two.test"].map(String::from);
    let pages = ["a", "b", "c"].map(|l| format!("{l}.github.io"));
    let denied: Vec<&String> = many.iter().chain(&two).chain(&pages).collect();
    // Every denied name answers with loopback: a refusal that leaked would
    // reach the canary.
    let hosts: Vec<String> = denied
        .iter()
        .map(|n| n.as_str())
        .chain(["allowed.test", "dnsonly.test"])
        .map(|n| format!("\"{n}\" = [\"127.0.0.1\"]"))
        .collect();
    let hosts = format!("[dns]\nhosts = {{ {} }}\n", hosts.join(", "));
    let config = format!(
        "[network]\negress_allowlist = [\"allowed.test:{}\"]\nprivate_destinations = [\"127.0.0.0/8\"]\n{hosts}",
        origin.port()
    );
    let proxy = Proxy::start_at(dir.path(), &config);
    for name in &denied {
        let (status, _) = curl(&proxy, &[&format!("http://{name}:{port}/")]);
        assert_eq!(status, 403, "{name}");
    }
    // Twice, to see the counts add up.
    let (status, _) = curl(&proxy, &[&format!("http://a.many.test:{port}/")]);
    assert_eq!(status, 403);
    let (status, _) = curl(&proxy, &[&format!("http://169.254.169.254:{port}/")]);
    assert_eq!(status, 403);
    let (status, _) = curl(&proxy, &[&format!("http://allowed.test:{}/", origin.port())]);
    assert_eq!(status, 200);
    let dig = Command::new("dig")
        .args(["+short", "+time=2", "+tries=1", "-p", &proxy.dns.port().to_string()])
        .arg(format!("@{}", proxy.dns.ip()))
        .args(["dnsonly.test", "A"])
        .output()
        .unwrap();
    assert!(dig.status.success(), "{dig:?}");
    assert!(text(&dig).0.trim().is_empty(), "dnsonly.test must be refused: {dig:?}");
    let entries = denied.len() + 4;
    assert!(proxy.wait_decisions(entries).len() >= entries);
    assert!(proxy.stop().success());
    canary.assert_untouched();

    let config_path = write(dir.path(), "secureops.toml", &config);
    let log = dir.path().join("secureops-audit.jsonl");
    let out = secureops(
        &["policy", "suggest", log.to_str().unwrap(), "-c", &config_path],
        dir.path(),
    );
    let (fragment, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let rules: Vec<&str> = fragment
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    let mut want = vec![format!("*.many.test:{port}")];
    want.extend(two.iter().chain(&pages).map(|n| format!("{n}:{port}")));
    want.push("dnsonly.test".into());
    let mut got: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{fragment}");
    // Counts: six refusals under many.test (a twice), one for the DNS name.
    let many_line = fragment.lines().find(|l| l.contains("\"*.many.test:")).unwrap();
    assert!(many_line.contains("# 6 refused: a.many.test:"), "{many_line}");
    assert!(
        fragment
            .lines()
            .any(|l| l.contains("\"dnsonly.test\"") && l.ends_with("# 1 refused")),
        "{fragment}"
    );
    // The metadata address is named as left out, never proposed.
    // (as a policy refusal it is vetted and named; as a safety refusal it
    // is counted among those no rule lifts)
    let named = fragment.contains(&format!("# not proposed: 169.254.169.254:{port}: "));
    assert!(named || fragment.contains("# left out: 1 refusals"), "{fragment}");
    assert!(!fragment.contains("allowed.test"), "{fragment}");

    // Pasted into a config, it validates and check allows every host.
    let merged = format!("{fragment}private_destinations = [\"127.0.0.0/8\"]\n{hosts}");
    let merged_path = write(dir.path(), "merged.toml", &merged);
    let validate = secureops(&["config", "validate", &merged_path], dir.path());
    assert!(validate.status.success(), "{merged}\n{}", text(&validate).1);
    for name in &denied {
        let (code, out) = check(dir.path(), &merged_path, &format!("{name}:{port}"));
        assert_eq!(code, 0, "{name}: {out}");
    }
    let (code, out) = check(dir.path(), &merged_path, "dnsonly.test");
    assert_eq!(code, 0, "{out}");
    // ... and nothing more than that.
    let (code, out) = check(dir.path(), &merged_path, &format!("other.test:{port}"));
    assert_eq!(code, 1, "{out}");
    let (code, out) = check(dir.path(), &merged_path, "a.many.test:443");
    assert_eq!(code, 1, "{out}");
    // With that config nothing is left to propose.
    let again = secureops(
        &["policy", "suggest", log.to_str().unwrap(), "-c", &merged_path],
        dir.path(),
    );
    let (again, _) = text(&again);
    assert!(
        again.contains("# nothing to add") && !again.contains("egress_allowlist"),
        "{again}"
    );
}

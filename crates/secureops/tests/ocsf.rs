//! `secureops audit export FILE --format ocsf`: a log written by the real
//! proxy (allowed and denied requests from curl, DNS queries from dig) is
//! exported, and every event is validated against the OCSF 1.8.0 schema
//! files committed under `fixtures/ocsf` (see `extract.py` there): required
//! attributes of the class and of every object in it, resolved through
//! `extends` and the declared profiles; no attribute the schema does not
//! define; attribute types; enum values and their caption siblings;
//! `class_uid`, `category_uid` and `type_uid` arithmetic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};
use support::{Canary, HttpOrigin, Proxy, curl, read_entries, secureops};

/// The committed schema subset, and a validator over it.
struct Schema {
    root: PathBuf,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    categories: Map<String, Value>,
}

/// An attribute table (name → merged definition) and its constraints.
struct Shape {
    attributes: Map<String, Value>,
    constraints: Map<String, Value>,
    profiles: Vec<String>,
}

impl Schema {
    fn load() -> Schema {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ocsf");
        let read =
            |rel: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(root.join(rel)).unwrap()).unwrap() };
        let dictionary = read("dictionary.json");
        Schema {
            dictionary: dictionary["attributes"].as_object().unwrap().clone(),
            types: dictionary["types"]["attributes"].as_object().unwrap().clone(),
            categories: read("categories.json")["attributes"].as_object().unwrap().clone(),
            root,
        }
    }

    fn file(&self, rel: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.root.join(rel)).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// A class or object with everything it extends, and the attributes of
    /// the profiles in `declared` that it includes. Enums merge (a class
    /// adds its activities to the base event's Unknown/Other).
    fn shape(&self, rel: &str, declared: &[String], errors: &mut Vec<String>) -> Shape {
        let mut chain = vec![];
        let mut next = Some(rel.to_owned());
        while let Some(rel) = next.take() {
            let Some(def) = self.file(&rel) else {
                errors.push(format!("schema file {rel} is not in the test data"));
                break;
            };
            next = def["extends"].as_str().map(|parent| match parent {
                "base_event" => "events/base_event.json".to_owned(),
                "network" => "events/network/network.json".to_owned(),
                object => format!("objects/{object}.json"),
            });
            chain.push(def);
        }
        let mut shape = Shape {
            attributes: Map::new(),
            constraints: Map::new(),
            profiles: vec![],
        };
        for def in chain.iter().rev() {
            let attributes = def["attributes"].as_object().cloned().unwrap_or_default();
            for include in attributes
                .get("$include")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let include = include.as_str().unwrap();
                let profile = include.trim_start_matches("profiles/").trim_end_matches(".json");
                if declared.iter().any(|d| d == profile) {
                    match self.file(include) {
                        Some(p) => merge(&mut shape.attributes, p["attributes"].as_object().unwrap()),
                        None => errors.push(format!("declared profile {profile} is not in the test data")),
                    }
                }
            }
            merge(&mut shape.attributes, &attributes);
            if let Some(c) = def["constraints"].as_object() {
                shape.constraints = c.clone();
            }
            if let Some(p) = def["profiles"].as_array() {
                shape
                    .profiles
                    .extend(p.iter().filter_map(Value::as_str).map(str::to_owned));
            }
        }
        shape.attributes.remove("$include");
        shape
    }

    /// Every way `event` breaks the schema (empty: valid).
    fn validate(&self, event: &Value) -> Vec<String> {
        let mut errors = vec![];
        let class_file = match event["class_uid"].as_u64() {
            Some(4001) => "events/network/network_activity.json",
            Some(4003) => "events/network/dns_activity.json",
            other => return vec![format!("class_uid {other:?} is not one this export may use")],
        };
        let declared: Vec<String> = event["metadata"]["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        let class = self.file(class_file).unwrap();
        let shape = self.shape(class_file, &declared, &mut errors);
        for profile in &declared {
            if !shape.profiles.contains(profile) {
                errors.push(format!("profile {profile} is not one the class supports"));
            }
        }
        // Classification arithmetic (the base event's enums for these are
        // placeholders the schema compiler fills in).
        // The category is declared on the class or a class it extends.
        let mut from = class.clone();
        while from["category"].is_null() {
            from = self
                .file(&format!("events/network/{}.json", from["extends"].as_str().unwrap()))
                .unwrap();
        }
        let category = &self.categories[from["category"].as_str().unwrap()];
        let category_uid = category["uid"].as_u64().unwrap();
        let class_uid = category_uid * 1000 + class["uid"].as_u64().unwrap();
        expect(&mut errors, "category_uid", &event["category_uid"], category_uid.into());
        expect(
            &mut errors,
            "category_name",
            &event["category_name"],
            category["caption"].clone(),
        );
        expect(&mut errors, "class_uid", &event["class_uid"], class_uid.into());
        expect(
            &mut errors,
            "class_name",
            &event["class_name"],
            class["caption"].clone(),
        );
        if let Some(activity) = event["activity_id"].as_u64() {
            expect(
                &mut errors,
                "type_uid",
                &event["type_uid"],
                (class_uid * 100 + activity).into(),
            );
            let caption = &shape.attributes["activity_id"]["enum"][activity.to_string()]["caption"];
            if let Some(caption) = caption.as_str() {
                let name = format!("{}: {caption}", class["caption"].as_str().unwrap());
                expect(&mut errors, "type_name", &event["type_name"], name.into());
            }
        }
        let placeholders = ["class_uid", "category_uid", "type_uid"];
        self.check_object(event, &shape, &declared, "", &placeholders, &mut errors);
        errors
    }

    /// Checks one object against `shape`, recursing into object attributes.
    fn check_object(
        &self,
        value: &Value,
        shape: &Shape,
        declared: &[String],
        path: &str,
        skip_enum: &[&str],
        errors: &mut Vec<String>,
    ) {
        let Some(fields) = value.as_object() else {
            errors.push(format!("{path}: not an object"));
            return;
        };
        for (name, def) in &shape.attributes {
            if def["requirement"] == "required" && fields.get(name).is_none_or(Value::is_null) {
                errors.push(format!("{path}{name}: required attribute missing"));
            }
        }
        for (kind, names) in &shape.constraints {
            let names: Vec<&str> = names.as_array().unwrap().iter().filter_map(Value::as_str).collect();
            let present = names
                .iter()
                .filter(|n| fields.get(**n).is_some_and(|v| !v.is_null()))
                .count();
            let ok = match kind.as_str() {
                "at_least_one" => present >= 1,
                "just_one" => present == 1,
                _ => true,
            };
            if !ok {
                errors.push(format!("{path}: constraint {kind} of {names:?} not met"));
            }
        }
        for (name, v) in fields {
            let here = format!("{path}{name}");
            let Some(local) = shape.attributes.get(name) else {
                errors.push(format!("{here}: not an attribute of this class/object"));
                continue;
            };
            let mut def = self
                .dictionary
                .get(name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            merge_one(&mut def, local.as_object().unwrap());
            let def = Value::Object(def);
            if def["is_array"] == true {
                match v.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check_value(item, &def, declared, &format!("{here}[{i}]"), errors);
                        }
                    }
                    None => errors.push(format!("{here}: not an array")),
                }
            } else {
                self.check_value(v, &def, declared, &here, errors);
            }
            if let (Some(enums), Some(n), false) =
                (def["enum"].as_object(), v.as_i64(), skip_enum.contains(&name.as_str()))
            {
                match enums.get(&n.to_string()) {
                    None => errors.push(format!(
                        "{here}: {n} is not in the enum {:?}",
                        enums.keys().collect::<Vec<_>>()
                    )),
                    Some(e) => {
                        // The name beside an id is its caption (99 = Other: free text).
                        let sibling = def["sibling"].as_str().filter(|s| fields.contains_key(*s));
                        if let Some(sibling) = sibling.filter(|s| n != 99 && fields[*s] != e["caption"]) {
                            errors.push(format!(
                                "{path}{sibling}: {} is not the caption {}",
                                fields[sibling], e["caption"]
                            ));
                        }
                    }
                }
            }
        }
    }

    fn check_value(&self, v: &Value, def: &Value, declared: &[String], here: &str, errors: &mut Vec<String>) {
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("");
        // A named type resolves to its base type (port_t → integer_t, with a range).
        let base = self.types.get(ty).and_then(|t| t["type"].as_str()).unwrap_or(ty);
        let ok = match base {
            "integer_t" | "long_t" => {
                let range = self.types.get(ty).and_then(|t| t["range"].as_array());
                v.is_i64()
                    && range.is_none_or(|r| {
                        let n = v.as_i64().unwrap();
                        r[0].as_i64().is_none_or(|lo| n >= lo) && r[1].as_i64().is_none_or(|hi| n <= hi)
                    })
            }
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            "object" => v.is_object(),
            t if t.ends_with("_t") => {
                v.is_string() && (ty != "ip_t" || v.as_str().unwrap().parse::<std::net::IpAddr>().is_ok())
            }
            object => {
                let mut errs = vec![];
                let shape = self.shape(&format!("objects/{object}.json"), declared, &mut errs);
                errors.extend(errs);
                self.check_object(v, &shape, declared, &format!("{here}."), &[], errors);
                true
            }
        };
        if !ok {
            errors.push(format!("{here}: {v} is not a valid {ty}"));
        }
    }
}

/// Merges attribute definitions of `from` into `into` (per attribute:
/// keys overwrite, enums unite).
fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (name, def) in from {
        if name == "$include" {
            continue;
        }
        let slot = into.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
        merge_one(slot.as_object_mut().unwrap(), def.as_object().unwrap());
    }
}

fn merge_one(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (k.as_str(), into.get_mut(k)) {
            ("enum", Some(Value::Object(have))) => have.extend(v.as_object().unwrap().clone()),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

fn expect(errors: &mut Vec<String>, name: &str, got: &Value, want: Value) {
    if *got != want {
        errors.push(format!("{name}: {got} (want {want})"));
    }
}

/// `dig` against the sinkhole, bounded in time; returns its status word.
fn dig_status(dns: std::net::SocketAddr, name: &str) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=3", "+tries=1", name, "A"])
        .output()
        .expect("dig (apt-get install dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_owned()
}

/// The exported events of `log` (exit status checked).
fn export(log: &Path, dir: &Path) -> Vec<Value> {
    let out = secureops(&["audit", "export", log.to_str().unwrap(), "--format", "ocsf"], dir);
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A log of the real proxy: one allowed HTTP request, one denied, one
/// allowed and one sinkholed DNS query, attributed to curl and dig.
fn real_log(dir: &Path, canary: &Canary, origin: &HttpOrigin) -> Proxy {
    let proxy = Proxy::start_at(
        dir,
        r#"
[network]
egress_allowlist = ["web.test:*"]
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = []
hosts = { "web.test" = ["127.0.0.1"], "denied.test" = ["127.0.0.1"] }
# A process rule turns attribution on, so entries carry pid and exe.
[[context.process]]
exe = "/usr/bin/true"
egress_allowlist = []
"#,
    );
    let (status, _) = curl(&proxy, &[&format!("http://web.test:{}/ok", origin.port())]);
    assert_eq!(status, 200);
    let (status, _) = curl(&proxy, &[&format!("http://denied.test:{}/leak", canary.port())]);
    assert_eq!(status, 403);
    assert_eq!(dig_status(proxy.dns, "web.test"), "NOERROR");
    assert_eq!(dig_status(proxy.dns, "exfil.example"), "NXDOMAIN");
    proxy.wait_decisions(4);
    proxy
}

#[test]
fn real_log_exports_as_valid_ocsf() {
    let schema = Schema::load();
    let canary = Canary::start();
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = real_log(dir.path(), &canary, &origin);
    let log = proxy.audit_path();
    assert!(proxy.stop().success());
    canary.assert_untouched();
    let entries = read_entries(&log);
    assert_eq!(entries.first().unwrap()["kind"], "start");
    assert_eq!(entries.last().unwrap()["kind"], "stop");
    let events = export(&log, dir.path());

    // One event per decision, in order, carrying the chain.
    let decisions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "egress" || e["kind"] == "dns")
        .collect();
    assert_eq!(events.len(), decisions.len());
    assert_eq!(events.len(), 4, "{events:#?}");
    let mut by_class = BTreeMap::new();
    for (event, entry) in events.iter().zip(&decisions) {
        let errors = schema.validate(event);
        assert!(errors.is_empty(), "{errors:#?}\nin {event:#}");
        assert_eq!(event["unmapped"]["seq"], entry["seq"]);
        assert_eq!(event["unmapped"]["prev"], entry["prev"]);
        assert_eq!(event["unmapped"]["sig"], entry["sig"]);
        assert_eq!(event["unmapped"]["key_fingerprint"], entries[0]["fingerprint"]);
        assert_eq!(event["metadata"]["original_time"], entry["ts"]);
        let writer = entries[0]["version"].as_str().unwrap();
        assert_eq!(
            writer,
            format!(
                "secureops {}",
                event["metadata"]["product"]["version"].as_str().unwrap()
            )
        );
        *by_class.entry(event["class_uid"].as_u64().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(by_class, BTreeMap::from([(4001, 2), (4003, 2)]));

    let find = |class: u64, host: &str| {
        events
            .iter()
            .find(|e| {
                e["class_uid"] == class && (e["dst_endpoint"]["hostname"] == host || e["query"]["hostname"] == host)
            })
            .unwrap_or_else(|| panic!("no {class} event for {host}: {events:#?}"))
    };
    let allowed = find(4001, "web.test");
    assert_eq!(allowed["activity_id"], 1);
    assert_eq!(allowed["action_id"], 1);
    assert_eq!(allowed["disposition_id"], 1);
    assert_eq!(allowed["dst_endpoint"]["port"], origin.port());
    assert_eq!(allowed["connection_info"]["direction_id"], 2);
    assert_eq!(allowed["unmapped"]["via"], "http");
    let curl = &allowed["actor"]["process"];
    assert!(curl["pid"].as_u64().is_some(), "{allowed:#}");
    assert_eq!(curl["name"], "curl");
    assert_eq!(curl["file"]["path"], decisions[0]["exe"]);
    let denied = find(4001, "denied.test");
    assert_eq!(denied["activity_id"], 5);
    assert_eq!(denied["action_id"], 2);
    assert_eq!(denied["disposition_id"], 2);
    assert_eq!(denied["status_code"], "403");
    assert_eq!(denied["severity_id"], 2);
    let dns_ok = find(4003, "web.test");
    assert_eq!(dns_ok["query"]["type"], "A");
    assert_eq!(dns_ok["disposition_id"], 1);
    let dns_no = find(4003, "exfil.example");
    assert_eq!(dns_no["disposition_id"], 2);
    assert_eq!(dns_no["activity_id"], 6);
}

/// The validator can fail: each broken copy of a valid event is caught.
#[test]
fn validator_catches_broken_events() {
    let schema = Schema::load();
    let canary = Canary::start();
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = real_log(dir.path(), &canary, &origin);
    let events = export(&proxy.audit_path(), dir.path());
    let egress = events.iter().find(|e| e["class_uid"] == 4001).unwrap();
    let dns = events.iter().find(|e| e["class_uid"] == 4003).unwrap();
    assert_eq!(schema.validate(egress), Vec::<String>::new());
    type Break = fn(&mut Value);
    let cases: [(&Value, &str, Break); 13] = [
        (egress, "activity_name", |e| e["activity_name"] = "Close".into()),
        (egress, "process", |e| {
            drop(e["actor"]["process"].as_object_mut().unwrap().remove("pid"))
        }),
        (egress, "file.type_id", |e| {
            drop(e["actor"]["process"]["file"].as_object_mut().unwrap().remove("type_id"))
        }),
        (egress, "metadata.version", |e| {
            drop(e["metadata"].as_object_mut().unwrap().remove("version"))
        }),
        (egress, "severity_id", |e| {
            drop(e.as_object_mut().unwrap().remove("severity_id"))
        }),
        (egress, "activity_id", |e| e["activity_id"] = 42.into()),
        (egress, "type_uid", |e| e["type_uid"] = 400_105.into()),
        (egress, "disposition_id", |e| e["disposition_id"] = 77.into()),
        (egress, "not an attribute", |e| {
            e["dst_endpoint"]["hostnme"] = "x".into()
        }),
        (egress, "port", |e| e["dst_endpoint"]["port"] = 70_000.into()),
        (egress, "direction_id", |e| {
            drop(e["connection_info"].as_object_mut().unwrap().remove("direction_id"))
        }),
        (dns, "hostname", |e| {
            drop(e["query"].as_object_mut().unwrap().remove("hostname"))
        }),
        (dns, "activity_id", |e| e["activity_id"] = 5.into()),
    ];
    for (event, want, break_it) in cases {
        let mut broken = event.clone();
        break_it(&mut broken);
        let errors = schema.validate(&broken);
        assert!(errors.iter().any(|e| e.contains(want)), "{want}: {errors:?}");
    }
}

#[test]
fn export_names_the_first_bad_line_and_refuses_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let canary = Canary::start();
    let origin = HttpOrigin::start();
    let proxy = real_log(dir.path(), &canary, &origin);
    let log = dir.path().join("audit.jsonl");
    std::fs::copy(proxy.audit_path(), &log).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = r#"{"not":"an entry"}"#;
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let path = log.to_str().unwrap();
    let out = secureops(&["audit", "export", path, "--format", "ocsf"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{path}:3: cannot export")), "{stderr}");
    // The event before the bad line was written, none after it.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    let missing = dir.path().join("missing.jsonl");
    let out = secureops(
        &["audit", "export", missing.to_str().unwrap(), "--format", "ocsf"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
    let out = secureops(&["audit", "export", path, "--format", "cef"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let out = secureops(&["audit", "export", path], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

//! The `replog schema` commands and the schema examples against one real
//! node:
//!
//! - `schema register` adds versions and finds a known one again; `schema
//!   check` says why an incompatible version is refused and exits 1;
//!   `schema get` by subject and by id, `schema list`, `schema delete`;
//! - on a topic created with `--schema-subject`, `replog produce` sends
//!   each line under the subject's latest version: a valid line is
//!   acknowledged, an invalid one refused by the broker with INVALID_RECORD;
//! - the examples `event_notification` and `event_carried_state` run: the
//!   first refuses a bad event before sending and fetches each order's
//!   details, the second's copy of the customers matches the source.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use replog_testkit::{Cluster, ClusterOptions};
use serde_json::Value;

const V1: &str =
    r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":false}"#;
const V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
const V3: &str =
    r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;

struct Env {
    cluster: Cluster,
    bootstrap: String,
}

impl Env {
    fn run(&self, program: PathBuf, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env("REPLOG_BOOTSTRAP", &self.bootstrap)
            .env("REPLOG_LOG", "warn")
            .output()
            .expect("run")
    }

    fn replog_raw(&self, args: &[&str]) -> Output {
        self.run(env!("CARGO_BIN_EXE_replog").into(), args)
    }

    fn replog(&self, args: &[&str]) -> String {
        let out = self.replog_raw(args);
        assert!(out.status.success(), "replog {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn example(&self, name: &str, args: &[&str]) -> String {
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps/<test>");
        let out = self.run(dir.join("examples").join(name), args);
        assert!(out.status.success(), "example {name}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `replog produce TOPIC` with `input` on stdin: (success, stderr).
    fn produce(&self, topic: &str, input: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_replog"))
            .args(["produce", topic])
            .env("REPLOG_BOOTSTRAP", &self.bootstrap)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn produce");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("produce");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.cluster.dir().join(name);
        std::fs::write(&p, text).expect("write schema file");
        p.display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_schema_files_when_the_cli_and_the_examples_use_them_then_versions_and_bound_topics_behave_as_documented()
{
    let opts = ClusterOptions { ready_timeout: Duration::from_secs(30), ..Default::default() };
    let cluster = Cluster::start(1, opts).await.expect("start a node (REPLOG_NODE_BIN or a workspace build)");
    let env = Env { bootstrap: cluster.serving_addrs().join(","), cluster };
    let (v1, v2, v3) = (env.file("v1.json", V1), env.file("v2.json", V2), env.file("v3.json", V3));

    let out = env.replog(&["schema", "register", "users", "--type", "json", "--file", &v1]);
    assert!(out.starts_with("registered users version 1 (id "), "{out}");
    let r: Value = serde_json::from_str(
        &env.replog(&["schema", "register", "users", "--type", "json", "--file", &v2, "--output", "json"]),
    )
    .expect("json");
    assert_eq!((r["version"].as_u64(), r["created"].as_bool()), (Some(2), Some(true)), "{r}");
    let again = env.replog(&["schema", "register", "users", "--type", "json", "--file", &v1]);
    assert!(again.starts_with("already registered: users version 1"), "{again}");

    let check = env.replog_raw(&["schema", "check", "users", "--type", "json", "--file", &v3]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success() && text.starts_with("incompatible (BACKWARD)"), "{text}");
    let refused = env.replog_raw(&["schema", "register", "users", "--type", "json", "--file", &v3]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("INCOMPATIBLE_SCHEMA(49)"), "{refused:?}");

    let latest = env.replog(&["schema", "get", "users"]);
    assert!(latest.contains("(users version 2)") && latest.contains("note"), "{latest}");
    let id = r["id"].as_u64().expect("id").to_string();
    assert!(env.replog(&["schema", "get", "--id", &id]).contains("note"));
    let list: Value = serde_json::from_str(&env.replog(&["schema", "list", "--output", "json"])).expect("json");
    assert_eq!(list[0]["subject"], "users", "{list}");
    assert_eq!(list[0]["versions"].as_array().map(Vec::len), Some(2), "{list}");

    env.replog(&["topic", "create", "bound", "--replication-factor", "1", "--schema-subject", "users"]);
    // A valid line is acknowledged; an invalid one is refused by the broker
    // (one batch each: a refused batch takes its other records with it).
    let (ok, err) = env.produce("bound", "{\"id\":1,\"note\":\"ok\"}\n");
    assert!(ok && err.contains("1 records acknowledged"), "{err}");
    let (ok, err) = env.produce("bound", "{\"id\":\"two\"}\n");
    assert!(!ok && err.contains("line 1: not acknowledged: INVALID_RECORD(53)"), "{err}");
    let t: Value =
        serde_json::from_str(&env.replog(&["topic", "describe", "bound", "--output", "json"])).expect("json");
    assert_eq!(t["partitions"][0]["high_watermark"], 1, "{t}");

    env.replog(&["schema", "delete", "users", "--version", "1"]);
    let left: Value =
        serde_json::from_str(&env.replog(&["schema", "list", "users", "--output", "json"])).expect("json");
    assert_eq!(left[0]["versions"][0][0], 2, "{left}");

    let n = env.example("event_notification", &["orders", "4"]);
    assert!(n.contains("refused before sending: INVALID_RECORD(53)"), "{n}");
    assert!(n.contains("shipping ord-3 (offset 3): 2 items to 3 Main St"), "{n}");
    let s = env.example("event_carried_state", &["customers", "3"]);
    assert!(s.contains("copy matches the source: 3 customers") && s.contains("cust-2 c2@example.com GOLD v2"), "{s}");
}

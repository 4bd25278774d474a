use super::*;
use crate::config::stack_config;

const BASE: &str = r#"
[eal]
args = ["-l", "0-1", "--no-pci", "--vdev", "net_null0"]
[[port]]
name = "net_null0"
[[vip]]
addr = "198.18.0.100"
[[service]]
vip = "198.18.0.100"
port = 80
kind = "object"
[[service]]
vip = "198.18.0.100"
port = 7
kind = "echo"
[[service]]
vip = "198.18.0.100"
port = 8080
kind = "proxy"
backends = ["198.18.0.10:80"]
"#;

fn cfg(text: &str) -> Config {
    Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn running(text: &str) -> StackConfig {
    stack_config(&cfg(text)).unwrap()
}

fn plan_of(old: &str, new: &str) -> Result<Plan, String> {
    plan(&cfg(old), &cfg(new), &running(old))
}

fn vip() -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 100)
}

#[test]
fn the_same_file_changes_nothing() {
    let p = plan_of(BASE, BASE).unwrap();
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(p.stack.listeners.len(), 3);
    assert!(!(0..3).any(|i| p.stack.is_retired(i)));
}

#[test]
fn a_vip_and_a_service_are_added_at_the_end() {
    let new = format!(
        "{BASE}\n[[vip]]\naddr = \"198.18.0.101\"\n[[service]]\nvip = \"198.18.0.101\"\nport = 9\nkind = \"echo\"\n[[service]]\nvip = \"198.18.0.100\"\nport = 9\nkind = \"echo\"\n"
    );
    let p = plan_of(BASE, &new).unwrap();
    assert_eq!(p.stack.vips.len(), 2);
    assert_eq!(p.stack.listeners.len(), 5, "appended, nothing moved");
    assert_eq!(p.stack.listener_for(Ipv4Addr::new(198, 18, 0, 101), 9), Some(3));
    assert_eq!(p.stack.listener_for(vip(), 9), Some(4));
    assert_eq!(p.stack.listener_for(vip(), 80), Some(0));
    assert!(p.changes.iter().any(|c| c.contains("vip 198.18.0.101 added")), "{:?}", p.changes);
    assert!(p.changes.iter().any(|c| c.contains("service 198.18.0.100:9 (echo) added")), "{:?}", p.changes);
    // The new VIP's subnet is on-link for the connections the engine opens.
    assert!(p.stack.routes.routes().len() >= running(BASE).routes.routes().len());
}

#[test]
fn a_removed_service_is_retired_and_its_index_kept() {
    let new = BASE.replace("[[service]]\nvip = \"198.18.0.100\"\nport = 7\nkind = \"echo\"\n", "");
    let p = plan_of(BASE, &new).unwrap();
    assert_eq!(p.stack.listeners.len(), 3);
    assert!(p.stack.is_retired(1) && !p.stack.is_retired(0) && !p.stack.is_retired(2));
    assert_eq!(p.stack.listener_for(vip(), 7), None, "no new connections");
    // Its flows' replicas still find it.
    assert_eq!(p.stack.resolve_listener(1, p.stack.listener_fingerprint(1)), Some(1));
    assert!(p.changes.iter().any(|c| c.contains("198.18.0.100:7 (echo) removed")), "{:?}", p.changes);
}

#[test]
fn a_changed_service_is_a_retirement_and_an_addition() {
    let new = BASE.replace("kind = \"echo\"\n", "kind = \"echo\"\necho_buffer = 4096\n");
    let p = plan_of(BASE, &new).unwrap();
    assert_eq!(p.stack.listeners.len(), 4);
    assert!(p.stack.is_retired(1));
    assert_eq!(p.stack.listener_for(vip(), 7), Some(3));
    // Same address and kind: one fingerprint. A replica naming the old index keeps the old
    // listener; a standby without that index finds the live one.
    let fp = p.stack.listener_fingerprint(1);
    assert_eq!(fp, p.stack.listener_fingerprint(3));
    assert_eq!(p.stack.resolve_listener(1, fp), Some(1));
    let fresh = running(&new);
    assert_eq!(fresh.resolve_listener(3, fp), Some(1), "a restarted standby maps the active's index by fingerprint");
    assert_eq!(fresh.resolve_listener(3, 0xdead), None);
}

#[test]
fn tcp_and_log_apply() {
    let new = format!("{BASE}\n[tcp]\nrto_min_ms = 50\n[log]\nlevel = \"debug\"\n");
    let p = plan_of(BASE, &new).unwrap();
    assert_eq!(p.stack.tcp.rto_min, flowtwin_engine::time::Duration::from_millis(50));
    assert!(p.changes.iter().any(|c| c.starts_with("tcp.rto_min_ms (200 → 50)")), "{:?}", p.changes);
    assert!(p.changes.iter().any(|c| c.starts_with("log.level")), "{:?}", p.changes);
}

#[test]
fn a_proxy_pool_is_left_to_ctl_backend() {
    let new = BASE.replace("backends = [\"198.18.0.10:80\"]", "backends = [\"198.18.0.10:80\", \"198.18.0.11:80\"]");
    let p = plan_of(BASE, &new).unwrap();
    assert_eq!(p.stack.listeners.len(), 3, "the proxy listener (and its live pool) is kept");
    assert!(p.changes.iter().any(|c| c.contains("ctl backend")), "{:?}", p.changes);
}

#[test]
fn a_proxy_service_is_added_and_removed_live() {
    let add = format!("{BASE}\n[[service]]\nvip = \"198.18.0.100\"\nport = 8081\nkind = \"proxy\"\nbackends = [\"198.18.0.10:80\"]\n");
    let p = plan_of(BASE, &add).unwrap();
    assert_eq!(p.stack.listener_for(vip(), 8081), Some(3));
    assert!(p.changes.iter().any(|c| c.contains("198.18.0.100:8081 (proxy) added")), "{:?}", p.changes);
    let gone = BASE.replace("[[service]]\nvip = \"198.18.0.100\"\nport = 8080\nkind = \"proxy\"\nbackends = [\"198.18.0.10:80\"]\n", "");
    let p = plan_of(BASE, &gone).unwrap();
    assert!(p.stack.is_retired(2) && p.stack.listener_for(vip(), 8080).is_none());
}

#[test]
fn what_cannot_change_live_is_refused_by_name_and_nothing_changes() {
    let cases: Vec<(String, &str)> = vec![
        (BASE.replace("\"0-1\"", "\"0-2\""), "eal.args"),
        (format!("{BASE}\n[engine]\nflow_capacity = 1024\n"), "engine.flow_capacity"),
        (format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9999\"\n"), "metrics.listen"),
        (BASE.replace("addr = \"198.18.0.100\"", "addr = \"198.18.0.100\"\nvrid = 7"), "vip 198.18.0.100.vrid"),
        (BASE.replace("port = 8080\nkind = \"proxy\"", "port = 8080\nkind = \"proxy\"\nbalance = \"least-conn\""), "198.18.0.100:8080 (proxy).balance"),
    ];
    for (new, key) in cases {
        let e = plan_of(BASE, &new).unwrap_err();
        assert!(e.contains(key) && e.contains("nothing changed"), "{key}: {e}");
    }
    // A VIP removed (with its service) and a sync change, both named in one refusal.
    let two = format!("{BASE}\n[[vip]]\naddr = \"198.18.0.101\"\n");
    let e = plan(&cfg(&two), &cfg(BASE), &running(&two)).unwrap_err();
    assert!(e.contains("vip 198.18.0.101: removing a VIP"), "{e}");
    // A VIP moved to another group.
    let three = format!("{BASE}\n[[vip]]\naddr = \"198.18.0.101\"\nvrid = 3\n[[vip]]\naddr = \"198.18.0.102\"\nvrid = 2\n");
    let grouped = |a: &str, b: &str| format!("{three}\n[[group]]\nname = \"one\"\nvips = [{a}]\n[[group]]\nname = \"two\"\nvips = [{b}]\n");
    let (x, y, z) = ("\"198.18.0.100\"", "\"198.18.0.101\"", "\"198.18.0.102\"");
    let before = grouped(&format!("{x}, {y}"), z);
    let e = plan(&cfg(&before), &cfg(&grouped(x, &format!("{y}, {z}"))), &running(&before)).unwrap_err();
    assert!(e.contains("vip 198.18.0.101: moving a VIP to another group"), "{e}");
    let sync = "\n[sync]\nrole = \"active\"\nnode_id = 1\nlisten = \"127.0.0.1:7701\"\npeer = \"127.0.0.1:7702\"\n";
    let e = plan_of(&format!("{BASE}{sync}"), &format!("{BASE}{}", sync.replace("node_id = 1", "node_id = 1\nheartbeat_ms = 2"))).unwrap_err();
    assert!(e.contains("sync.heartbeat_ms (5 → 2)"), "{e}");
}

#[test]
fn a_reloader_publishes_applied_configs_only() {
    let dir = std::env::temp_dir().join(format!("ft-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("e.toml");
    std::fs::write(&path, BASE).unwrap();
    let live = Arc::new(LiveConfig::new(Arc::new(running(BASE))));
    let r = Reloader::new(path.clone(), None, live.clone(), cfg(BASE));
    assert_eq!(r.reload("test").unwrap(), Vec::<String>::new());
    assert_eq!(live.generation(), 0, "no change, nothing published");
    std::fs::write(&path, format!("{BASE}\n[[service]]\nvip = \"198.18.0.100\"\nport = 9\nkind = \"echo\"\n")).unwrap();
    let v: Value = serde_json::from_str(&r.reply("test")).unwrap();
    assert_eq!(v["reloaded"], true, "{v}");
    assert_eq!(live.generation(), 1);
    assert_eq!(live.load().0.listeners.len(), 4);
    assert_eq!(live.load().0.listener_for(vip(), 9), Some(3));
    // Refused: a bad file, then a key that cannot change. Nothing published.
    std::fs::write(&path, "[eal\n").unwrap();
    assert!(r.reply("test").contains("\"error\""));
    std::fs::write(&path, BASE.replace("\"0-1\"", "\"0-3\"")).unwrap();
    assert!(r.reply("test").contains("eal.args"));
    assert_eq!(live.generation(), 1);
    assert_eq!((r.applied.load(Ordering::Relaxed), r.refused.load(Ordering::Relaxed)), (2, 2));
    // Removing the service added by the reload before: the running config is the reference.
    std::fs::write(&path, BASE).unwrap();
    r.reload("test").unwrap();
    let (c, g) = live.load();
    assert_eq!((g, c.listener_for(vip(), 9), c.is_retired(3)), (2, None, true));
    let _ = std::fs::remove_dir_all(&dir);
}

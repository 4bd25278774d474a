//! Unit tests of the configuration file: parsing, defaults and each validation error.

use super::*;

/// The EAL and port every test file starts with.
macro_rules! head {
    () => {
        r#"
    [eal]
    args = ["-l", "0-1", "--no-pci", "--vdev", "net_null0"]
    [[port]]
    name = "net_null0"
"#
    };
}

pub(super) const MIN: &str = concat!(
    head!(),
    r#"
    [[vip]]
    addr = "198.18.0.100"
    [[service]]
    vip = "198.18.0.100"
    port = 80
    kind = "object"
"#
);

#[test]
fn minimal_config_parses_with_defaults() {
    let c = Config::parse(MIN).unwrap();
    assert_eq!(c.engine.flow_capacity, 65536);
    assert_eq!(c.tcp.mss, 1460);
    assert_eq!(c.vips[0].vrid, 1);
    assert_eq!(c.metrics.addr().unwrap().unwrap().port(), 9470);
}

#[test]
fn errors_name_the_key() {
    let typo = MIN.replace("[[port]]", "[[port]]\nrx_dsc = 5");
    assert!(Config::parse(&typo).unwrap_err().contains("rx_dsc"));
    let bad_vip = MIN.replace("vip = \"198.18.0.100\"", "vip = \"198.18.0.7\"");
    assert!(Config::parse(&bad_vip).unwrap_err().contains("service[0].vip"));
    let bad_mss = format!("{MIN}\n[tcp]\nmss = 10\n");
    assert!(Config::parse(&bad_mss).unwrap_err().contains("tcp.mss"));
    let bad_kind = MIN.replace("\"object\"", "\"ftp\"");
    assert!(Config::parse(&bad_kind).unwrap_err().contains("ftp"));
    let bad_mac = MIN.replace("addr = \"198.18.0.100\"", "addr = \"198.18.0.100\"\nmac = \"zz\"");
    assert!(Config::parse(&bad_mac).unwrap_err().contains("vip[0].mac"));
}

const TWO: &str = concat!(
    head!(),
    r#"
    [[vip]]
    addr = "198.18.0.100"
    [[vip]]
    addr = "198.18.0.101"
    vrid = 2
    [[vip]]
    addr = "198.18.0.102"
    vrid = 2
    [[group]]
    name = "web"
    vips = ["198.18.0.100"]
    [[group]]
    name = "api-2"
    vips = ["198.18.0.101", "198.18.0.102"]
"#
);

#[test]
fn groups_parse_and_map_every_vip() {
    let c = Config::parse(TWO).unwrap();
    assert_eq!(c.groups.len(), 2);
    let ids: Vec<u8> = c.vips.iter().map(|v| c.group_of(v.addr).0).collect();
    assert_eq!(ids, vec![0, 1, 1]);
    // Without groups: one group of every VIP (what every existing file means).
    let c = Config::parse(MIN).unwrap();
    assert!(c.groups.is_empty());
    assert_eq!(c.group_of("198.18.0.100".parse().unwrap()).0, 0);
}

#[test]
fn group_errors_name_the_key() {
    let err = |text: &str| Config::parse(text).unwrap_err();
    let unknown = TWO.replace(r#"vips = ["198.18.0.100"]"#, r#"vips = ["198.18.0.100", "198.18.0.9"]"#);
    assert!(err(&unknown).contains("group[0].vips[1] = 198.18.0.9: no [[vip]]"), "{}", err(&unknown));
    let twice = TWO.replace(r#"vips = ["198.18.0.100"]"#, r#"vips = ["198.18.0.100", "198.18.0.101"]"#);
    assert!(err(&twice).contains("group[1].vips[0] = 198.18.0.101: already in group \"web\""), "{}", err(&twice));
    let orphan = TWO.replace(r#"vips = ["198.18.0.101", "198.18.0.102"]"#, r#"vips = ["198.18.0.101"]"#);
    assert!(err(&orphan).contains("vip[2].addr = 198.18.0.102: in no [[group]]"), "{}", err(&orphan));
    let empty = TWO.replace(r#"vips = ["198.18.0.100"]"#, "vips = []");
    assert!(err(&empty).contains("group[0].vips is empty"), "{}", err(&empty));
    let name = TWO.replace(r#"name = "web""#, r#"name = "web site""#);
    assert!(err(&name).contains("group[0].name = \"web site\""), "{}", err(&name));
    let dup = TWO.replace(r#"name = "api-2""#, r#"name = "web""#);
    assert!(err(&dup).contains("group[1].name = \"web\": two groups"), "{}", err(&dup));
    let shared_mac = TWO.replacen("vrid = 2", "vrid = 1", 1);
    assert!(err(&shared_mac).contains("vip[1].addr = 198.18.0.101: shares MAC 00:00:5e:00:01:01 with 198.18.0.100"), "{}", err(&shared_mac));
    let typo = TWO.replace(r#"name = "web""#, "name = \"web\"\nvip = []");
    assert!(err(&typo).contains("unknown field `vip`"), "{}", err(&typo));
}

#[test]
fn eal_args_are_checked_and_must_create_the_port() {
    let no_vdev = MIN.replace(", \"--vdev\", \"net_null0\"", "");
    let e = Config::parse(&no_vdev).unwrap_err();
    assert!(e.contains("port[0].name = \"net_null0\"") && e.contains("--vdev"), "{e}");
    let other = MIN.replace("\"--vdev\", \"net_null0\"", "\"--vdev=net_af_packet0,iface=a0\"");
    let e = Config::parse(&other).unwrap_err();
    assert!(e.contains("creates only net_af_packet0"), "{e}");
    let bogus = MIN.replace("\"--no-pci\"", "\"--no-pci\", \"--bogus-flag\"");
    let e = Config::parse(&bogus).unwrap_err();
    assert!(e.contains("eal.args") && e.contains("--bogus-flag"), "{e}");
}

#[test]
fn sync_section() {
    let ok = format!("{MIN}\n[sync]\nnode_id = 1\nrole = \"active\"\nlisten = \"198.19.0.1:7400\"\npeer = \"198.19.0.2:7400\"\n");
    let c = Config::parse(&ok).unwrap();
    let y = c.sync.unwrap();
    assert_eq!((y.heartbeat_ms, y.dead_after, y.mode), (5, 3, SyncMode::Strict));
    let same = ok.replace("198.19.0.2:7400", "198.19.0.1:7400");
    assert!(Config::parse(&same).unwrap_err().contains("sync.peer"));
    let role = ok.replace("\"active\"", "\"primary\"");
    assert!(Config::parse(&role).unwrap_err().contains("primary"));
    let hb = format!("{ok}heartbeat_ms = 0\n");
    assert!(Config::parse(&hb).unwrap_err().contains("sync.heartbeat_ms"));
    assert_eq!(y.busy_poll_us, 0, "polling is opt-in");
    assert_eq!((y.scheduler.as_str(), y.priority), ("rr", None), "real-time round-robin at the default priority");
    for (extra, key) in [
        ("scheduler = \"batch\"\n", "sync.scheduler = \"batch\""),
        ("priority = 0\n", "sync.priority = 0"),
        ("priority = 100\n", "sync.priority = 100"),
        ("scheduler = \"other\"\npriority = 5\n", "sync.priority = 5: only with"),
    ] {
        let e = Config::parse(&format!("{ok}{extra}")).unwrap_err();
        assert!(e.contains(key), "{extra:?}: {e}");
    }
    let y2 = Config::parse(&format!("{ok}scheduler = \"fifo\"\npriority = 50\n")).unwrap().sync.unwrap();
    assert_eq!((y2.scheduler.as_str(), y2.priority), ("fifo", Some(50)));
    let bp = format!("{ok}busy_poll_us = 300\n");
    assert_eq!(Config::parse(&bp).unwrap().sync.unwrap().busy_poll_us, 300);
    let bp = format!("{ok}busy_poll_us = 2000000\n");
    assert!(Config::parse(&bp).unwrap_err().contains("sync.busy_poll_us"));
    assert_eq!(y.cpu, None, "the sync thread is not pinned by default");
    assert_eq!(Config::parse(&format!("{ok}cpu = 3\n")).unwrap().sync.unwrap().cpu, Some(3));
    let e = Config::parse(&format!("{ok}cpu = 5000\n")).unwrap_err();
    assert!(e.contains("sync.cpu = 5000"), "{e}");
    assert!(Config::parse(&format!("{ok}cpu = -1\n")).is_err());
}

#[test]
fn log_section() {
    let c = Config::parse(MIN).unwrap();
    assert_eq!((c.log.level.as_str(), c.log.format.as_str()), ("info", "human"));
    let c = Config::parse(&format!("{MIN}\n[log]\nlevel = \"warn,flowtwin_sync=debug\"\nformat = \"json\"\n")).unwrap();
    assert_eq!((c.log.level.as_str(), c.log.format.as_str()), ("warn,flowtwin_sync=debug", "json"));
    let err = |body: &str| Config::parse(&format!("{MIN}\n[log]\n{body}\n")).unwrap_err();
    let e = err("level = \"verbose\"");
    assert!(e.starts_with("log.level = \"verbose\": \"verbose\" is neither a level"), "{e}");
    let e = err("level = \"flowtwin=loud\"");
    assert!(e.starts_with("log.level = \"flowtwin=loud\": not a filter in RUST_LOG syntax"), "{e}");
    assert_eq!(err("format = \"xml\""), "log.format = \"xml\": expected \"human\" or \"json\"");
    assert!(err("lvl = \"info\"").contains("unknown field `lvl`"));
}

#[test]
fn mac_parsing() {
    assert_eq!(parse_mac("00:00:5e:00:01:0a"), Some([0, 0, 0x5e, 0, 1, 10]));
    assert_eq!(parse_mac("00:00:5e:00:01"), None);
    assert_eq!(parse_mac("00:00:5e:00:01:0a:0b"), None);
    assert_eq!(parse_mac("0:00:5e:00:01:0a"), None);
}

//! The `flowtwin` binary facing bad input: every mistake gets a clear message naming the
//! problem and a non-zero exit, never a panic. Spawns the real binary (EAL may be initialised
//! once per process, so nothing here runs EAL in the test process itself).

use std::process::Command;

fn flowtwin(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowtwin")).args(args).output().expect("spawn flowtwin");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "flowtwin panicked on {args:?}:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

fn write_cfg(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flowtwin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

const GOOD: &str = r#"
[eal]
args = ["-l", "0-1", "--no-pci", "--in-memory", "--vdev", "net_null0"]
[[port]]
name = "net_null0"
[[vip]]
addr = "198.18.0.100"
[[service]]
vip = "198.18.0.100"
port = 80
kind = "object"
"#;

#[test]
fn help_explains_every_subcommand() {
    let (code, text) = flowtwin(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["run", "bench", "ctl", "check-config"] {
        assert!(text.contains(sub), "--help lacks {sub}:\n{text}");
    }
    let (code, text) = flowtwin(&["bench", "--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("--mode") && text.contains("--json") && text.contains("EAL"), "{text}");
}

#[test]
fn bad_cli_args_are_named() {
    let (code, text) = flowtwin(&["bench", "--mode", "warp", "--", "-l", "0"]);
    assert_ne!(code, 0);
    assert!(text.contains("warp") && text.contains("macswap"), "{text}");
    let (code, text) = flowtwin(&["bench", "--duration=-3", "--", "-l", "0"]);
    assert_ne!(code, 0);
    assert!(text.contains("duration"), "{text}");
    let (code, text) = flowtwin(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(text.contains("frobnicate"), "{text}");
}

#[test]
fn good_config_checks_ok() {
    let p = write_cfg("good.toml", GOOD);
    let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok"));
    // Without [[group]]: one group of every VIP, printed with its digest.
    assert!(text.contains("groups: default=198.18.0.100 (layout "), "{text}");
}

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        ("typo.toml", GOOD.replace("[[port]]", "[[port]]\nrx_dsc = 5"), "rx_dsc"),
        ("vip.toml", GOOD.replace("vip = \"198.18.0.100\"", "vip = \"198.18.0.9\""), "service[0].vip"),
        ("mss.toml", format!("{GOOD}\n[tcp]\nmss = 3\n"), "tcp.mss"),
        ("syntax.toml", "[eal\nargs=".to_string(), "TOML"),
        ("burst.toml", format!("{GOOD}\n[engine]\nburst = 99\n"), "engine.burst"),
        ("metrics.toml", format!("{GOOD}\n[metrics]\nlisten = \"nowhere\"\n"), "metrics.listen"),
        ("route.toml", format!("{GOOD}\n[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"10.0.0.1\"\n"), "route[0].via = \"10.0.0.1\": not on-link"),
        ("prefix.toml", format!("{GOOD}\n[[route]]\nprefix = \"10.0.0.0/40\"\nvia = \"10.0.0.1\"\n"), "route[0].prefix"),
    ];
    for (name, body, needle) in cases {
        let p = write_cfg(name, &body);
        let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
        assert_ne!(code, 0, "{name} accepted");
        assert!(text.to_lowercase().contains(&needle.to_lowercase()), "{name}: error does not name {needle:?}:\n{text}");
    }
    let (code, text) = flowtwin(&["check-config", "-c", "/nonexistent/flowtwin.toml"]);
    assert_ne!(code, 0);
    assert!(text.contains("/nonexistent/flowtwin.toml"), "{text}");
}

#[test]
fn eal_failure_is_a_clear_error() {
    // Lcore 63 does not exist on a test machine: EAL refuses, flowtwin explains.
    let (code, text) = flowtwin(&["bench", "--duration", "1", "--", "-l", "63", "--no-pci", "--in-memory", "--log-level", "error"]);
    assert_ne!(code, 0);
    assert!(text.contains("EAL init") && text.contains("rte_eal_init failed"), "{text}");
}

#[test]
fn bench_without_ports_says_how_to_add_one() {
    let (code, text) = flowtwin(&["bench", "--duration", "1", "--", "-l", "0-1", "--no-pci", "--no-huge", "--no-shconf", "-m", "256", "--log-level", "error"]);
    assert_ne!(code, 0);
    assert!(text.contains("no ports") && text.contains("--vdev"), "{text}");
}

#[test]
fn ctl_without_engine_names_the_socket() {
    let (code, text) = flowtwin(&["ctl", "-s", "/tmp/flowtwin-no-such.sock", "status"]);
    assert_ne!(code, 0);
    assert!(text.contains("/tmp/flowtwin-no-such.sock"), "{text}");
}

#[test]
fn bad_eal_flag_is_named_without_dpdk_usage_dump() {
    let (code, text) = flowtwin(&["bench", "--duration", "1", "--", "-l", "0", "--no-pci", "--bogus-flag"]);
    assert_ne!(code, 0);
    assert!(text.contains("EAL argument \"--bogus-flag\"") && text.contains("no option --bogus-flag"), "{text}");
    assert!(!text.contains("EAL common options") && text.lines().count() <= 3, "DPDK's usage dump leaked:\n{text}");
    let (_, text) = flowtwin(&["bench", "--duration", "1", "--", "-l", "0", "--no-pic"]);
    assert!(text.contains("did you mean --no-pci?"), "{text}");
}

#[test]
fn missing_hugepages_name_the_cause_and_the_fix() {
    // A --huge-dir that is not a hugetlbfs mount is what a missing mount looks like to EAL
    // (its hugepage setup fails with EACCES), whatever this machine has mounted.
    let dir = std::env::temp_dir().join(format!("flowtwin-cli-nohuge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let (code, text) = flowtwin(&["bench", "--duration", "1", "--", "-l", "0", "--no-pci", "--no-shconf", "--huge-dir", d, "--log-level", "error"]);
    let _ = std::fs::remove_dir(&dir);
    assert_ne!(code, 0);
    assert!(!text.contains("Permission denied"), "EACCES is not a permission problem here: {text}");
    let reserved = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("HugePages_Total:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    if reserved > 0 {
        assert!(text.contains(&format!("--huge-dir {d} is not a hugetlbfs mount")), "{text}");
        assert!(text.contains("mount -t hugetlbfs") && text.contains("--in-memory"), "{text}");
    } else {
        assert!(text.contains("no hugepages are reserved") && text.contains("--no-huge"), "{text}");
    }
}

#[test]
fn check_config_finds_a_port_no_eal_argument_creates() {
    let body = GOOD.replace(", \"--vdev\", \"net_null0\"", "").replace("net_null0", "net_af_packet0");
    let p = write_cfg("novdev.toml", &body);
    let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
    assert_ne!(code, 0, "accepted a port nothing creates:\n{body}");
    assert!(text.contains("port[0].name = \"net_af_packet0\"") && text.contains("\"--vdev\", \"net_af_packet0,"), "{text}");
    let p = write_cfg("pci.toml", &GOOD.replace("\"net_null0\"\n", "\"0000:01:00.0\"\n"));
    let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(text.contains("port[0].name = \"0000:01:00.0\"") && text.contains("--no-pci"), "{text}");
    let p = write_cfg("flag.toml", &GOOD.replace("\"--in-memory\"", "\"--in-memroy\""));
    let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(text.contains("eal.args") && text.contains("did you mean --in-memory?"), "{text}");
}

#[test]
fn ctl_unknown_command_is_named_before_connecting() {
    let (code, text) = flowtwin(&["ctl", "-s", "/tmp/flowtwin-no-such.sock", "bogus"]);
    assert_ne!(code, 0);
    assert!(text.contains("unknown command \"bogus\""), "{text}");
    assert!(text.contains("status") && text.contains("failback"), "the error lists the commands: {text}");
    assert!(!text.contains("cannot reach"), "a typo is not a connection problem: {text}");
}

#[test]
fn version_names_the_git_revision_and_the_dpdk_it_runs_on() {
    let start = std::time::Instant::now();
    let (code, text) = flowtwin(&["--version"]);
    assert_eq!(code, 0, "{text}");
    // No EAL init behind it: an operator can ask any time, also while an engine runs.
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "--version took {:?}", start.elapsed());
    assert!(text.starts_with(&format!("flowtwin {} (git ", env!("CARGO_PKG_VERSION"))), "{text}");
    let running = text.split(" on DPDK ").nth(1).unwrap_or_default();
    assert!(running.starts_with(|c: char| c.is_ascii_digit()), "no running DPDK version: {text}");
    assert!(text.contains(", built with DPDK "), "{text}");
    // Built inside git: the revision is the checkout's (HEAD moved since? cargo reran build.rs).
    let head = Command::new("git").args(["describe", "--always"]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        let h = String::from_utf8_lossy(&h.stdout).trim().to_string();
        if std::env::var_os("FLOWTWIN_GIT_REV").is_none() {
            assert!(text.contains(&format!("(git {h}")), "HEAD is {h}: {text}");
        }
    }
}

#[test]
fn man_pages_and_completions_come_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("flowtwin-cli-gen-{}", std::process::id()));
    let (man, comp) = (dir.join("man"), dir.join("completions"));
    let (code, text) = flowtwin(&["generate", "man", man.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = flowtwin(&["generate", "completions", comp.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for page in ["flowtwin", "flowtwin-run", "flowtwin-ctl", "flowtwin-check-config", "flowtwin-bench"] {
        assert!(read(man.join(format!("{page}.1"))).starts_with(".ie"), "{page}.1 is not roff");
    }
    assert!(read(man.join("flowtwin-ctl.1")).contains("failback"), "the ctl page lists the commands");
    let bash = read(comp.join("flowtwin.bash"));
    assert!(bash.contains("check-config") && bash.contains("failback"), "{bash}");
    assert!(read(comp.join("_flowtwin")).contains("check-config"));
    assert!(read(comp.join("flowtwin.fish")).contains("check-config"));
    // The packaging helper itself is documented nowhere an operator looks.
    assert!(!bash.contains("generate") && !read(man.join("flowtwin.1")).contains("generate"));
    assert!(!flowtwin(&["--help"]).1.contains("generate"));
    let _ = std::fs::remove_dir_all(&dir);
}

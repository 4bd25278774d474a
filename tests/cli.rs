//! The `flowtwin` binary facing bad input: every mistake gets a clear message naming the
//! problem and a non-zero exit, never a panic. Spawns the real binary (EAL may be initialised
//! once per process, so nothing here runs EAL in the test process itself).

use std::process::Command;

fn flowtwin(args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = flowtwin_env(args, &[]);
    (code, format!("{stdout}{stderr}"))
}

/// The binary's exit code, stdout and stderr, with `env` added to a log-neutral environment
/// (whatever FLOWTWIN_LOG, RUST_LOG and FLOWTWIN_LOG_FORMAT the test runner has are removed).
fn flowtwin_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowtwin"));
    cmd.args(args).env_remove("FLOWTWIN_LOG").env_remove("RUST_LOG").env_remove("FLOWTWIN_LOG_FORMAT");
    let out = cmd.envs(env.iter().copied()).output().expect("spawn flowtwin");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!stdout.contains("panicked") && !stderr.contains("panicked"), "flowtwin panicked on {args:?}:\n{stdout}{stderr}");
    (out.status.code().unwrap_or(-1), stdout, stderr)
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
fn check_config_prints_the_routing_table() {
    // GOOD's VIP has the default prefix_len (24): its subnet is the one route.
    let p = write_cfg("routes-none.toml", GOOD);
    let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", p.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    let routes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("route ")).collect();
    assert_eq!(routes, ["route 198.18.0.0/24 on-link"], "{stdout}");

    let body = format!(
        r#"{GOOD}
[[route]]
prefix = "0.0.0.0/0"
via = "198.18.0.254"
[[route]]
prefix = "10.0.0.0/8"
via = "198.18.0.1"
[[route]]
prefix = "203.0.113.0/25"
"#
    );
    let p = write_cfg("routes.toml", &body);
    let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", p.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    // Longest prefix first, the order the engine looks them up in.
    let routes: Vec<&str> = stdout.lines().filter(|l| l.starts_with("route ")).collect();
    assert_eq!(
        routes,
        [
            "route 203.0.113.0/25 on-link",
            "route 198.18.0.0/24 on-link",
            "route 10.0.0.0/8 via 198.18.0.1",
            "route 0.0.0.0/0 via 198.18.0.254",
        ],
        "{stdout}"
    );
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

/// Every stderr line of `flowtwin_env` parsed as one JSON object.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}"))).collect()
}

#[test]
fn check_config_logs_the_load_as_one_event_in_either_format() {
    let p = write_cfg("log-good.toml", GOOD);
    let path = p.to_str().unwrap();
    let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", path], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&format!("{path}: ok\n")), "the command's own output stays on stdout: {stdout}");
    assert_eq!(stderr, format!("flowtwin: config {path} loaded: 1 VIP(s), 1 service(s), 1 group(s), stand-alone\n"));

    let p = write_cfg("log-json.toml", &format!("{GOOD}\n[log]\nformat = \"json\"\n"));
    let path = p.to_str().unwrap();
    let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", path], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    let j = &lines[0];
    assert_eq!((&j["event"], &j["level"], &j["path"]), (&"config_loaded".into(), &"INFO".into(), &path.into()));
    assert_eq!((&j["vips"], &j["services"], &j["groups"], &j["role"]), (&1.into(), &1.into(), &1.into(), &"stand-alone".into()));
    assert!(j["timestamp"].is_string() && j["message"].as_str().unwrap().starts_with("config "), "{j}");

    // The config's level applies once it is read (the subscriber starts with the default).
    let p = write_cfg("log-warn.toml", &format!("{GOOD}\n[log]\nlevel = \"warn\"\n"));
    let (code, _, stderr) = flowtwin_env(&["check-config", "-c", p.to_str().unwrap()], &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, _, stderr) = flowtwin_env(&["check-config", "-c", p.to_str().unwrap()], &[("RUST_LOG", "info")]);
    assert!(code == 0 && stderr.starts_with("flowtwin: config "), "RUST_LOG overrides log.level: {stderr}");

    // The environment overrides the config: its filter hides the info event, its format wins.
    let (code, _, stderr) = flowtwin_env(&["check-config", "-c", path], &[("FLOWTWIN_LOG", "warn")]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, _, stderr) = flowtwin_env(&["check-config", "-c", path], &[("RUST_LOG", "warn"), ("FLOWTWIN_LOG", "info")]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&stderr).len(), 1, "FLOWTWIN_LOG comes before RUST_LOG: {stderr}");
    let (_, _, stderr) = flowtwin_env(&["check-config", "-c", path], &[("FLOWTWIN_LOG_FORMAT", "human")]);
    assert!(stderr.starts_with("flowtwin: config "), "{stderr}");
}

#[test]
fn a_refused_config_is_one_error_event() {
    let p = write_cfg("log-refused.toml", &GOOD.replace("vip = \"198.18.0.100\"", "vip = \"198.18.0.9\""));
    let path = p.to_str().unwrap();
    let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", path], &[]);
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.starts_with(&format!("flowtwin: error: config {path}: service[0].vip = 198.18.0.9")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A config that cannot be read has no [log] to follow: the environment's format holds.
    let (code, _, stderr) = flowtwin_env(&["check-config", "-c", path], &[("FLOWTWIN_LOG_FORMAT", "json")]);
    assert_ne!(code, 0);
    let lines = json_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!((&lines[0]["event"], &lines[0]["level"]), (&"config_refused".into(), &"ERROR".into()));
    assert!(lines[0]["error"].as_str().unwrap().contains("service[0].vip = 198.18.0.9"), "{}", lines[0]);
}

#[test]
fn bad_log_settings_name_the_key_or_variable() {
    let cases = [
        ("level = \"verbose\"", "log.level = \"verbose\""),
        ("level = \"flowtwin=loud\"", "log.level = \"flowtwin=loud\""),
        ("format = \"xml\"", "log.format = \"xml\": expected \"human\" or \"json\""),
    ];
    for (body, needle) in cases {
        let p = write_cfg("log-bad.toml", &format!("{GOOD}\n[log]\n{body}\n"));
        let (code, text) = flowtwin(&["check-config", "-c", p.to_str().unwrap()]);
        assert_ne!(code, 0, "{body} accepted");
        assert!(text.contains(needle), "{body}: error does not name {needle:?}:\n{text}");
    }
    let p = write_cfg("log-env.toml", GOOD);
    for (var, value) in [("FLOWTWIN_LOG", "warning"), ("RUST_LOG", "info,flowtwin=loud"), ("FLOWTWIN_LOG_FORMAT", "xml")] {
        let (code, stdout, stderr) = flowtwin_env(&["check-config", "-c", p.to_str().unwrap()], &[(var, value)]);
        assert_ne!(code, 0, "{var}={value} accepted");
        assert_eq!(stdout, "");
        assert!(stderr.starts_with(&format!("flowtwin: error: {var} = {value:?}: ")), "{var}: {stderr}");
    }
}

use super::*;
use flowtwin_engine::capture::WorkerTap;

/// Ethernet/IPv4/TCP 198.18.0.2:40000 -> 198.18.0.100:`dport`, `pad` payload bytes.
fn tcp_frame(dport: u16, pad: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + pad];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + pad) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18, 0, 2]);
    f[30..34].copy_from_slice(&[198, 18, 0, 100]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f
}

#[test]
fn start_options_parse_and_errors_name_them() {
    let r = parse_start(&["/tmp/x.pcapng", "--filter", "tcp", "port", "80", "--count", "5", "--snaplen", "128"]).unwrap();
    assert_eq!((r.filter.as_str(), r.count, r.snaplen, r.seconds), ("tcp port 80", 5, 128, DEFAULT_SECONDS));
    assert!(parse_start(&[]).unwrap_err().contains("FILE"));
    assert!(parse_start(&["--count", "5"]).unwrap_err().contains("FILE"));
    assert!(parse_start(&["f", "--count", "0"]).unwrap_err().contains("--count"));
    assert!(parse_start(&["f", "--seconds"]).unwrap_err().contains("--seconds needs"));
    assert!(parse_start(&["f", "--snaplen", "10"]).unwrap_err().contains("64..=262144"));
    assert!(parse_start(&["f", "--bogus"]).unwrap_err().contains("unknown option \"--bogus\""));
}

#[test]
fn a_capture_writes_what_matches_and_tcpdump_reads_it() {
    let dir = std::env::temp_dir().join(format!("ft-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.pcapng");
    let tap = Arc::new(CaptureTap::default());
    let c = Capturer::new(tap.clone());
    let bad = c.command(&["start", file.to_str().unwrap(), "--filter", "tcp", "portt", "80"]);
    assert!(bad.contains("error") && bad.contains("tcp portt 80"), "{bad}");
    let r: serde_json::Value = serde_json::from_str(&c.command(&["start", file.to_str().unwrap(), "--filter", "tcp port 80", "--count", "3"])).unwrap();
    assert_eq!(r["count"], 3, "{r}");
    assert!(c.command(&["start", file.to_str().unwrap()]).contains("one is running"));
    let mut w = WorkerTap::new(tap.clone(), 0);
    w.refresh();
    assert!(w.on());
    for (i, port) in [80u16, 7, 80, 80, 80].iter().enumerate() {
        w.frame(1_700_000_000_000_000 + i as u64, i % 2 == 1, &tcp_frame(*port, i));
    }
    // The count is reached: the writer stops the tap on its own.
    for _ in 0..100 {
        if c.command(&[]).contains("\"done\"") {
            break;
        }
        w.refresh();
        std::thread::sleep(Duration::from_millis(20));
    }
    let s: serde_json::Value = serde_json::from_str(&c.command(&[])).unwrap();
    assert_eq!((s["capture"].as_str(), s["written"].as_u64()), (Some("done"), Some(3)), "{s}");
    assert!(is_pcapng(&file));
    // An independent reader: tcpdump (Debian's), when the machine has it.
    if let Ok(out) = std::process::Command::new("tcpdump").args(["-nn", "-r"]).arg(&file).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.iter().all(|l| l.contains("198.18.0.2.40000 > 198.18.0.100.80")), "{text}");
    }
    assert!(c.command(&["bogus"]).contains("unknown subcommand"));
    let _ = std::fs::remove_dir_all(&dir);
}

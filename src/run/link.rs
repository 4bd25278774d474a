//! The port's link, watched by the main loop: a link down long enough hands the groups over.

use tracing::{info, warn};

/// Watches the port's link. For a software port on a kernel interface (`net_af_packet`,
/// `net_af_xdp`: the vdev's `iface=`), the kernel's carrier and operstate (DPDK reports these
/// PMDs' links up whatever the interface does); for a NIC, DPDK's link status.
pub(super) struct LinkWatch {
    iface: Option<String>,
    up: bool,
    /// Since when the link has been down.
    down_since: Option<std::time::Instant>,
    last_check: std::time::Instant,
    pub(super) last_request: Option<std::time::Instant>,
}

/// The kernel interface behind a software port named `port`: the `iface=` of its `--vdev`.
pub(super) fn vdev_iface(eal_args: &[String], port: &str) -> Option<String> {
    if !(port.starts_with("net_af_packet") || port.starts_with("net_af_xdp")) {
        return None;
    }
    eal_args
        .windows(2)
        .filter(|w| w[0] == "--vdev")
        .map(|w| w[1].as_str())
        .chain(eal_args.iter().filter_map(|a| a.strip_prefix("--vdev=")))
        .filter(|v| v.split(',').next() == Some(port))
        .find_map(|v| v.split(',').find_map(|kv| kv.strip_prefix("iface=")).map(str::to_string))
}

impl LinkWatch {
    pub(super) fn new(iface: Option<String>) -> LinkWatch {
        let now = std::time::Instant::now();
        LinkWatch { iface, up: true, down_since: None, last_check: now, last_request: None }
    }

    /// The link of the kernel interface, `None` if it cannot be read.
    fn kernel_link(iface: &str) -> Option<bool> {
        let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{iface}/{f}")).ok();
        let oper = read("operstate")?;
        // carrier cannot be read on an interface that is administratively down.
        let carrier = read("carrier").map(|c| c.trim() == "1").unwrap_or(false);
        Some(carrier && matches!(oper.trim(), "up" | "unknown"))
    }

    /// Checks the link every 10 ms; returns how long it has been down (None: up).
    pub(super) fn poll(&mut self, dpdk_up: impl FnOnce() -> bool) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        if now.duration_since(self.last_check) >= std::time::Duration::from_millis(10) {
            self.last_check = now;
            let up = self.iface.as_deref().and_then(LinkWatch::kernel_link).unwrap_or_else(dpdk_up);
            if up != self.up {
                match (up, self.down_since) {
                    (true, Some(t)) => {
                        let down = now.duration_since(t);
                        info!(event = "link", up, down_ms = down.as_millis() as u64, "port link up again after {down:?}")
                    }
                    _ => warn!(
                        event = "link",
                        up,
                        iface = self.iface.as_deref(),
                        "port link DOWN{}",
                        self.iface.as_deref().map(|i| format!(" (kernel interface {i})")).unwrap_or_default()
                    ),
                }
                self.up = up;
                self.down_since = if up { None } else { Some(now) };
                self.last_request = None;
            }
        }
        self.down_since.map(|t| now.duration_since(t))
    }
}
#[cfg(test)]
mod link_watch_tests {
    use super::vdev_iface;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// The kernel interface of a software port comes from its own `--vdev`; a NIC has none.
    #[test]
    fn the_kernel_interface_of_a_software_port() {
        let a = args(&["-l", "0-1", "--vdev", "net_af_packet1,iface=x1", "--vdev", "net_af_packet0,iface=a0,qpairs=1"]);
        assert_eq!(vdev_iface(&a, "net_af_packet0").as_deref(), Some("a0"));
        assert_eq!(vdev_iface(&a, "net_af_packet1").as_deref(), Some("x1"));
        assert_eq!(vdev_iface(&args(&["--vdev=net_af_xdp0,iface=v0"]), "net_af_xdp0").as_deref(), Some("v0"));
        assert_eq!(vdev_iface(&a, "0000:01:00.0"), None, "a NIC: DPDK's link status");
        assert_eq!(vdev_iface(&args(&["--vdev", "net_af_packet0"]), "net_af_packet0"), None, "no iface= given");
    }
}

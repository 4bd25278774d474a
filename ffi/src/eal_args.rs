//! EAL's command line as DPDK 22.11 reads it, checked on our side before `rte_eal_init` sees
//! it, and the devices it creates.
//!
//! `rte_eal_init` answers an option it does not know by printing its whole usage (about 100
//! lines) and failing with EINVAL; the one line that names the bad option is lost in it.
//! [`EalArgs::parse`] walks the arguments the way EAL's `getopt_long` does (the same short and
//! long options, `-lVALUE` / `-l VALUE`, `--opt=value` / `--opt value`, unique prefixes of long
//! options, `--` ends the options) and names the bad argument instead. The option table is
//! DPDK 22.11's (`eal_short_options` / `eal_long_options` in `eal_common_options.c`), the
//! version this crate is built against and runs on (`librte_eal.so.23`).
//!
//! Nothing here calls DPDK: `flowtwin check-config` uses it without initialising EAL.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum HasArg {
    No,
    Required,
    /// Only as `--opt=value`; a following argument is not its value.
    Optional,
}

/// Long options of DPDK 22.11's EAL.
const LONG: &[(&str, HasArg)] = &[
    ("allow", HasArg::Required),
    ("base-virtaddr", HasArg::Required),
    ("block", HasArg::Required),
    ("create-uio-dev", HasArg::No),
    ("file-prefix", HasArg::Required),
    ("force-max-simd-bitwidth", HasArg::Required),
    ("help", HasArg::No),
    ("huge-dir", HasArg::Required),
    ("huge-unlink", HasArg::Optional),
    ("huge-worker-stack", HasArg::Optional),
    ("in-memory", HasArg::No),
    ("iova-mode", HasArg::Required),
    ("lcores", HasArg::Required),
    ("legacy-mem", HasArg::No),
    ("log-level", HasArg::Required),
    ("main-lcore", HasArg::Required),
    ("match-allocations", HasArg::No),
    ("mbuf-pool-ops-name", HasArg::Required),
    ("no-hpet", HasArg::No),
    ("no-huge", HasArg::No),
    ("no-pci", HasArg::No),
    ("no-shconf", HasArg::No),
    ("no-telemetry", HasArg::No),
    ("proc-type", HasArg::Required),
    ("single-file-segments", HasArg::No),
    ("socket-limit", HasArg::Required),
    ("socket-mem", HasArg::Required),
    ("syslog", HasArg::Required),
    ("telemetry", HasArg::No),
    ("trace", HasArg::Required),
    ("trace-bufsz", HasArg::Required),
    ("trace-dir", HasArg::Required),
    ("trace-mode", HasArg::Required),
    ("vdev", HasArg::Required),
    ("vfio-intr", HasArg::Required),
    ("vfio-vf-token", HasArg::Required),
    ("vmware-tsc-map", HasArg::No),
];

/// Short options of DPDK 22.11's EAL (`"a:b:c:s:d:hl:S:m:n:r:v"`), with the long option each
/// one means for what we collect.
const SHORT: &[(char, HasArg, &str)] = &[
    ('a', HasArg::Required, "allow"),
    ('b', HasArg::Required, "block"),
    ('c', HasArg::Required, "coremask"),
    ('s', HasArg::Required, "service-coremask"),
    ('d', HasArg::Required, "driver"),
    ('h', HasArg::No, "help"),
    ('l', HasArg::Required, "corelist"),
    ('S', HasArg::Required, "service-corelist"),
    ('m', HasArg::Required, "memory"),
    ('n', HasArg::Required, "channels"),
    ('r', HasArg::Required, "ranks"),
    ('v', HasArg::No, "version"),
];

/// An EAL argument EAL would refuse (with its usage dump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// The argument as given.
    pub arg: String,
    /// What is wrong with it, and what to write instead where we can tell.
    pub problem: String,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EAL argument {:?}: {}", self.arg, self.problem)
    }
}

impl std::error::Error for ArgError {}

/// What a set of EAL arguments asks for, as far as flowtwin's checks need it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EalArgs {
    /// Every `--vdev` value (`name,key=value,...`), in order.
    pub vdevs: Vec<String>,
    /// Every `-a` / `--allow` value (`pci-address[,args]`).
    pub allow: Vec<String>,
    /// Every `-b` / `--block` value.
    pub block: Vec<String>,
    pub no_pci: bool,
    pub no_huge: bool,
    pub in_memory: bool,
    pub huge_dir: Option<String>,
}

impl EalArgs {
    /// Walk `args` as EAL's `getopt_long` would; the first argument EAL would refuse is an error.
    /// Arguments that are not options (EAL leaves them to the application) are ignored, as EAL
    /// ignores them.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<EalArgs, ArgError> {
        let mut out = EalArgs::default();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_ref();
            i += 1;
            if a == "--" {
                break;
            }
            if let Some(body) = a.strip_prefix("--") {
                let (name, inline) = match body.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (body, None),
                };
                let (long, has) = find_long(a, name)?;
                let value = match (has, inline) {
                    (HasArg::No, Some(_)) => {
                        return Err(ArgError { arg: a.into(), problem: format!("--{long} takes no value") })
                    }
                    (HasArg::No, None) | (HasArg::Optional, None) => None,
                    (_, Some(v)) => Some(v.to_string()),
                    (HasArg::Required, None) => match args.get(i) {
                        Some(v) => {
                            i += 1;
                            Some(v.as_ref().to_string())
                        }
                        None => return Err(needs_value(a, &format!("--{long}"))),
                    },
                };
                out.note(long, value);
            } else if let Some(cluster) = a.strip_prefix('-').filter(|c| !c.is_empty()) {
                // A cluster of short options: "-hv", "-l0-1", "-l 0-1".
                for (at, c) in cluster.char_indices() {
                    let Some(&(_, has, long)) = SHORT.iter().find(|s| s.0 == c) else {
                        return Err(ArgError {
                            arg: a.into(),
                            problem: format!(
                                "DPDK {}'s EAL has no option -{c} (its short options: {})",
                                BUILT_FOR,
                                SHORT.iter().map(|s| format!("-{}", s.0)).collect::<Vec<_>>().join(" ")
                            ),
                        });
                    };
                    if has == HasArg::No {
                        out.note(long, None);
                        continue;
                    }
                    let rest = &cluster[at + c.len_utf8()..];
                    let value = if !rest.is_empty() {
                        rest.to_string()
                    } else if let Some(v) = args.get(i) {
                        i += 1;
                        v.as_ref().to_string()
                    } else {
                        return Err(needs_value(a, &format!("-{c}")));
                    };
                    out.note(long, Some(value));
                    break;
                }
            }
        }
        Ok(out)
    }

    fn note(&mut self, long: &str, value: Option<String>) {
        match (long, value) {
            ("vdev", Some(v)) => self.vdevs.push(v),
            ("allow", Some(v)) => self.allow.push(v),
            ("block", Some(v)) => self.block.push(v),
            ("huge-dir", Some(v)) => self.huge_dir = Some(v),
            ("no-pci", _) => self.no_pci = true,
            ("no-huge", _) => self.no_huge = true,
            ("in-memory", _) => self.in_memory = true,
            _ => {}
        }
    }

    /// The device names the `--vdev` arguments create (each value up to its first comma).
    pub fn vdev_names(&self) -> Vec<&str> {
        self.vdevs.iter().map(|v| device_name(v)).collect()
    }

    /// Whether a port named `name` can exist once EAL has started with these arguments, as far
    /// as the arguments tell: a virtual device (`net_*` / `eth_*`) exists only if a `--vdev`
    /// creates it; a PCI address only if PCI is probed (no `--no-pci`), allowed (`-a`, when any
    /// is given) and not blocked (`-b`). Other names (devices of other buses) are not judged.
    /// The error says what is missing and what to add.
    pub fn check_port(&self, name: &str) -> Result<(), String> {
        if self.vdev_names().contains(&name) {
            return Ok(());
        }
        if let Some(addr) = pci_addr(name) {
            if self.no_pci {
                return Err(format!(
                    "a PCI device, but eal.args has --no-pci (EAL then probes no PCI device): drop --no-pci and add \"-a\", \"{addr}\""
                ));
            }
            if self.block.iter().filter_map(|b| pci_addr(device_name(b))).any(|b| b == addr) {
                return Err("blocked by a -b / --block argument in eal.args: remove it".to_string());
            }
            let allowed: Vec<String> = self.allow.iter().filter_map(|a| pci_addr(device_name(a))).collect();
            if !self.allow.is_empty() && !allowed.contains(&addr) {
                return Err(format!(
                    "EAL probes only the devices given with -a / --allow ({}): add \"-a\", \"{addr}\"",
                    self.allow.iter().map(|a| device_name(a)).collect::<Vec<_>>().join(", ")
                ));
            }
            return Ok(());
        }
        if name.starts_with("net_") || name.starts_with("eth_") {
            let have = self.vdev_names();
            let created = if have.is_empty() {
                "eal.args creates no virtual device".to_string()
            } else {
                format!("eal.args creates only {}", have.join(", "))
            };
            return Err(format!(
                "no EAL argument creates this device ({created}): add \"--vdev\", \"{name},...\" to eal.args{}",
                vdev_example(name)
            ));
        }
        Ok(())
    }
}

/// The DPDK version whose EAL options this table holds.
pub const BUILT_FOR: &str = "22.11";

fn needs_value(arg: &str, opt: &str) -> ArgError {
    ArgError { arg: arg.into(), problem: format!("{opt} needs a value (the next argument, or {opt}=VALUE for long options)") }
}

/// The long option `name` means, as glibc's getopt_long resolves it: an exact match, else a
/// unique prefix.
fn find_long(arg: &str, name: &str) -> Result<(&'static str, HasArg), ArgError> {
    if let Some(&(l, h)) = LONG.iter().find(|(l, _)| *l == name) {
        return Ok((l, h));
    }
    let prefixed: Vec<_> = if name.is_empty() { Vec::new() } else { LONG.iter().filter(|(l, _)| l.starts_with(name)).collect() };
    match prefixed.as_slice() {
        [&(l, h)] => Ok((l, h)),
        [] => {
            let hint = match closest(name) {
                Some(l) => format!("; did you mean --{l}?"),
                None => String::new(),
            };
            Err(ArgError { arg: arg.into(), problem: format!("DPDK {BUILT_FOR}'s EAL has no option --{name}{hint}") })
        }
        many => Err(ArgError {
            arg: arg.into(),
            problem: format!(
                "ambiguous: --{name} could be {}; write the option out",
                many.iter().map(|(l, _)| format!("--{l}")).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// The known long option nearest to `name`, if it is near (a typo).
fn closest(name: &str) -> Option<&'static str> {
    LONG.iter()
        .map(|(l, _)| (edit_distance(name, l), *l))
        .filter(|&(d, l)| d <= 3 && d < l.len() / 2 + 1)
        .min()
        .map(|(_, l)| l)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A device argument's name: everything before its first comma.
fn device_name(v: &str) -> &str {
    v.split(',').next().unwrap_or(v)
}

/// `name` as a PCI address in DPDK's form (`dddd:bb:dd.f`, lower case), if it is one
/// (`bb:dd.f` means domain 0).
fn pci_addr(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_hexdigit());
    if !(hex(dom, 8) && hex(bus, 2) && hex(dev, 2) && func.len() == 1 && hex(func, 1)) {
        return None;
    }
    let n = |s: &str| u32::from_str_radix(s, 16).ok();
    Some(format!("{:04x}:{:02x}:{:02x}.{:x}", n(dom)?, n(bus)?, n(dev)?, n(func)?))
}

/// What a `--vdev` for `name` usually looks like, for the error message.
fn vdev_example(name: &str) -> &'static str {
    if name.starts_with("net_af_packet") || name.starts_with("eth_af_packet") {
        " (e.g. \"--vdev\", \"net_af_packet0,iface=eth1,qpairs=1,framecnt=4096\")"
    } else if name.starts_with("net_af_xdp") {
        " (e.g. \"--vdev\", \"net_af_xdp0,iface=eth1,start_queue=0,queue_count=1\")"
    } else if name.starts_with("net_memif") {
        " (e.g. \"--vdev\", \"net_memif0,role=server,socket=/run/memif.sock\")"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EalArgs, ArgError> {
        EalArgs::parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn what_the_project_passes_parses() {
        for line in [
            "-l 0-1 --no-pci --in-memory --file-prefix a --vdev net_af_packet0,iface=a0,qpairs=1",
            "--lcores=0@0,1@0 --no-huge --no-shconf -m 512 --no-pci --vdev=net_null0 --log-level warning",
            "-l0 --no-pci --log-level=error --single-file-segments --huge-unlink --huge-unlink=never",
            "-a 0000:01:00.0 -l 0-3 -n 4 --socket-mem 1024 --iova-mode va --telemetry",
            "-l 0 --in-mem --no-p", // unique prefixes, as getopt_long takes them
            "-hv -l 0 -- --anything-after-the-end -x",
            "-l 0 stray-non-option --no-pci",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        let a = parse("-l 0 --vdev net_null0 --vdev=net_ring0,nodeaction=x -a 01:00.0,foo=1 --no-pci --huge-dir /mnt/h").unwrap();
        assert_eq!(a.vdev_names(), ["net_null0", "net_ring0"]);
        assert_eq!(a.allow, ["01:00.0,foo=1"]);
        assert!(a.no_pci && !a.no_huge && !a.in_memory);
        assert_eq!(a.huge_dir.as_deref(), Some("/mnt/h"));
    }

    #[test]
    fn bad_arguments_are_named() {
        let e = parse("-l 0 --bogus-flag --no-pci").unwrap_err();
        assert_eq!(e.arg, "--bogus-flag");
        assert!(e.problem.contains("no option --bogus-flag"), "{e}");
        let e = parse("-l 0 --in-memroy").unwrap_err();
        assert!(e.to_string().contains("did you mean --in-memory?"), "{e}");
        let e = parse("--huge").unwrap_err();
        assert!(e.problem.contains("ambiguous") && e.problem.contains("--huge-dir"), "{e}");
        let e = parse("-l 0 --no-pci=yes").unwrap_err();
        assert!(e.problem.contains("takes no value"), "{e}");
        let e = parse("-l 0 --file-prefix").unwrap_err();
        assert!(e.problem.contains("needs a value"), "{e}");
        let e = parse("-l").unwrap_err();
        assert!(e.problem.contains("-l needs a value"), "{e}");
        let e = parse("-l 0 -x").unwrap_err();
        assert!(e.problem.contains("no option -x"), "{e}");
        let e = parse("-w 0000:01:00.0").unwrap_err();
        assert!(e.problem.contains("no option -w"), "{e}");
    }

    #[test]
    fn ports_need_a_device_the_args_create() {
        let a = parse("-l 0-1 --no-pci --in-memory --vdev net_null0").unwrap();
        a.check_port("net_null0").unwrap();
        let e = a.check_port("net_af_packet0").unwrap_err();
        assert!(e.contains("only net_null0") && e.contains("\"--vdev\", \"net_af_packet0,"), "{e}");
        let e = parse("-l 0").unwrap().check_port("net_af_packet0").unwrap_err();
        assert!(e.contains("creates no virtual device"), "{e}");
        let e = a.check_port("0000:01:00.0").unwrap_err();
        assert!(e.contains("--no-pci"), "{e}");
        let pci = parse("-l 0 -a 01:00.0").unwrap();
        pci.check_port("0000:01:00.0").unwrap();
        assert!(pci.check_port("0000:02:00.0").unwrap_err().contains("-a"));
        parse("-l 0").unwrap().check_port("0000:02:00.0").unwrap();
        assert!(parse("-l 0 -b 0000:02:00.0").unwrap().check_port("0000:02:00.0").is_err());
        // Devices of other buses are not judged.
        a.check_port("dpni.1").unwrap();
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(pci_addr("0000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(pci_addr("3B:00.1").as_deref(), Some("0000:3b:00.1"));
        assert_eq!(pci_addr("net_null0"), None);
        assert_eq!(pci_addr("0000:01:00"), None);
    }
}

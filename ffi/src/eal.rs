//! EAL: initialisation (once per process), lcore enumeration and launching work on lcores.

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::eal_args::EalArgs;
use crate::error::{Error, Result};
use crate::{sys, LcoreId};

/// Set by the first `Eal::init`; never cleared. `rte_eal_init` may run once per process
/// (a second call returns EALREADY, and `rte_eal_cleanup` does not allow re-init).
static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// Proof that EAL is initialised. Creating ports, mempools and rings requires one.
/// Dropping it calls `rte_eal_cleanup`.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise EAL with `args` as on a DPDK command line (the program name is prepended).
    /// A second call in the same process is an error, not undefined behaviour.
    ///
    /// The arguments are checked first ([`EalArgs::parse`]): an option DPDK 22.11's EAL does
    /// not know is named in the error, and `rte_eal_init` (which would print its whole usage
    /// instead) is not called.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        let parsed = EalArgs::parse(args).map_err(|e| Error::refused(e.to_string()))?;
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::invalid(
                "rte_eal_init",
                "EAL is already initialised in this process (DPDK allows one init per process)",
            ));
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("flowtwin").expect("static string has no NUL"));
        for a in args {
            let a = a.as_ref();
            match CString::new(a) {
                Ok(c) => owned.push(c),
                Err(_) => {
                    return Err(Error::invalid(
                        "rte_eal_init",
                        format!("EAL argument {a:?} contains a NUL byte"),
                    ))
                }
            }
        }
        // EAL may keep pointers into argv (it permutes argv and some options keep the string),
        // so the strings live for the rest of the process: leak them once.
        let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Box::leak(argv.into_boxed_slice());
        let argc = (argv.len() - 1) as c_int;
        // SAFETY: argv is a NULL-terminated array of argc valid, 'static NUL-terminated strings;
        // EAL_STARTED guarantees this is the only call in the process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let mut err = Error::last("rte_eal_init");
            if err.errno == libc::EACCES {
                // EAL reports every hugepage setup it cannot use as EACCES ("Cannot get
                // hugepage information"); "Permission denied" would send the operator after
                // file permissions.
                if let Some(p) = hugepage_problem(&parsed, &HugeFacts::read()) {
                    err.message = p.cause;
                    err = err.with_hint(p.fix);
                }
            } else if let Some(h) = eal_hint(&parsed, err.errno) {
                err = err.with_hint(h);
            }
            return Err(err);
        }
        Ok(Eal { _private: () })
    }

    /// True once any `Eal::init` was attempted in this process.
    pub fn attempted() -> bool {
        EAL_STARTED.load(Ordering::SeqCst)
    }

    /// The main lcore (the thread that called `init`).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: plain query of EAL configuration after a successful init.
        LcoreId(unsafe { sys::rte_get_main_lcore() })
    }

    /// Worker lcores (every enabled lcore except the main one), in id order.
    pub fn worker_lcores(&self) -> Vec<LcoreId> {
        let mut v = Vec::new();
        // SAFETY: rte_get_next_lcore only reads EAL's lcore configuration. `u32::MAX` is the
        // documented "start" value (-1 as unsigned).
        let mut i = unsafe { sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while i < sys::RTE_MAX_LCORE {
            v.push(LcoreId(i));
            // SAFETY: as above.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
        }
        v
    }

    /// Whether EAL lets `lcore` run on CPU `cpu` (its `-l` / `--lcores` mapping).
    pub fn lcore_runs_on(&self, lcore: LcoreId, cpu: usize) -> bool {
        let Ok(c) = i32::try_from(cpu) else { return false };
        // SAFETY: reads EAL's lcore configuration after a successful init; the shim checks
        // both ranges.
        unsafe { sys::ft_lcore_has_cpu(lcore.0, c) == 1 }
    }

    /// Number of enabled lcores, main included.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: plain query of EAL configuration.
        unsafe { sys::rte_lcore_count() }
    }

    /// NUMA socket of an lcore (for mempool placement).
    pub fn lcore_socket(&self, lcore: LcoreId) -> i32 {
        // SAFETY: plain query; out-of-range ids return SOCKET_ID_ANY-like values, not UB.
        unsafe { sys::rte_lcore_to_socket_id(lcore.0) as i32 }
    }

    /// Run `f` on worker `lcore`. The closure's return value is the lcore's exit code.
    /// A panic inside `f` is caught, printed and reported as -1 (it must not unwind into C).
    pub fn launch<F>(&self, lcore: LcoreId, f: F) -> Result<LaunchHandle>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let boxed: Box<Box<dyn FnOnce() -> i32 + Send>> = Box::new(Box::new(f));
        let arg = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: `trampoline` takes ownership of `arg` exactly once (Box::from_raw). If the
        // launch fails, EAL did not run it and we reclaim the box below.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore.0) };
        if ret != 0 {
            // SAFETY: the launch failed, so the trampoline never saw `arg`; reclaim it once.
            drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() -> i32 + Send>) });
            return Err(Error::from_ret(format!("rte_eal_remote_launch({lcore})"), ret));
        }
        Ok(LaunchHandle { lcore, joined: false })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every LaunchHandle borrowed nothing from us; releases
        // hugepage mappings and device resources.
        unsafe {
            sys::rte_eal_mp_wait_lcore();
            sys::rte_eal_cleanup();
        }
    }
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` came from Box::into_raw in `launch` and is consumed exactly once here.
    let f = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() -> i32 + Send>) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(_) => {
            eprintln!("flowtwin: a worker lcore panicked; its exit code is -1");
            -1
        }
    }
}

/// A running lcore job; `join` waits for its exit code.
pub struct LaunchHandle {
    lcore: LcoreId,
    joined: bool,
}

impl LaunchHandle {
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Wait for the job to finish and return its exit code.
    pub fn join(mut self) -> i32 {
        self.joined = true;
        // SAFETY: waits on a lcore we launched; EAL tracks its state.
        unsafe { sys::rte_eal_wait_lcore(self.lcore.0) }
    }
}

impl Drop for LaunchHandle {
    fn drop(&mut self) {
        if !self.joined {
            // SAFETY: as in join; never leave a running lcore behind silently.
            unsafe { sys::rte_eal_wait_lcore(self.lcore.0) };
        }
    }
}

/// What an operator should try after an EAL init failure other than EACCES, from the args and
/// errno.
fn eal_hint(args: &EalArgs, errno: i32) -> Option<String> {
    if !args.no_huge && hugepages_free() == Some(0) {
        return Some(
            "no hugepages: run scripts/setup, or add --no-huge --no-shconf -m 512 to the EAL args".into(),
        );
    }
    if args.no_huge && args.in_memory {
        return Some("--no-huge and --in-memory cannot be combined: use --no-huge --no-shconf".into());
    }
    if errno == 0 || errno == libc::EAGAIN || errno == libc::EALREADY {
        return Some(
            "if another DPDK process is running, give each a distinct --file-prefix (or --in-memory / --no-shconf)".into(),
        );
    }
    if errno == libc::EINVAL {
        return Some("check the EAL arguments (lcore list -l / --lcores must name existing CPUs; see the EAL log above)".into());
    }
    None
}

fn hugepages_free() -> Option<u64> {
    HugeFacts::read().free
}

/// The machine's hugepages, as EAL's hugepage setup sees them.
#[derive(Debug, Default, Clone)]
struct HugeFacts {
    /// `HugePages_Total` / `HugePages_Free` of /proc/meminfo (default page size).
    total: Option<u64>,
    free: Option<u64>,
    /// Mount points of hugetlbfs file systems (/proc/mounts).
    mounts: Vec<String>,
}

impl HugeFacts {
    fn read() -> HugeFacts {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
        };
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        HugeFacts {
            total: field("HugePages_Total:"),
            free: field("HugePages_Free:"),
            mounts: mounts
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.get(2) == Some(&"hugetlbfs")).then(|| f[1].replace("\\040", " "))
                })
                .collect(),
        }
    }
}

/// Why EAL found no hugepages it can use, and what to do, in an operator's words.
#[derive(Debug, PartialEq, Eq)]
struct HugeProblem {
    cause: String,
    fix: String,
}

const WITHOUT_HUGEPAGES: &str = "--no-huge --no-shconf -m 512";

/// The cause of an EACCES from `rte_eal_init` (EAL's "Cannot get hugepage information").
fn hugepage_problem(args: &EalArgs, f: &HugeFacts) -> Option<HugeProblem> {
    if args.no_huge {
        return None;
    }
    let p = |cause: String, fix: String| Some(HugeProblem { cause, fix });
    let mounted = if f.mounts.is_empty() {
        "no hugetlbfs is mounted".to_string()
    } else {
        format!("hugetlbfs is mounted at {}", f.mounts.join(", "))
    };
    let point_at = f.mounts.first().map_or("a hugetlbfs mount", String::as_str);
    if f.total == Some(0) {
        return p(
            "no hugepages are reserved (HugePages_Total is 0 in /proc/meminfo)".into(),
            format!("reserve some (sysctl -w vm.nr_hugepages=512, or scripts/setup), or run without them: add {WITHOUT_HUGEPAGES} to the EAL args"),
        );
    }
    if !args.in_memory {
        if let Some(d) = &args.huge_dir {
            if !f.mounts.iter().any(|m| same_dir(m, d)) {
                return p(
                    format!("--huge-dir {d} is not a hugetlbfs mount ({mounted})"),
                    format!(
                        "mount hugetlbfs there (mount -t hugetlbfs nodev {d}), point --huge-dir at {point_at}, \
                         or drop --huge-dir and add --in-memory (DPDK then maps hugepages without a mount)"
                    ),
                );
            }
        } else if f.mounts.is_empty() {
            return p(
                "hugepages are reserved but no hugetlbfs is mounted".into(),
                "mount hugetlbfs (mount -t hugetlbfs nodev /dev/hugepages; under systemd: systemctl start dev-hugepages.mount), \
                 or add --in-memory to the EAL args (DPDK then maps hugepages without a mount)"
                    .into(),
            );
        }
    }
    if f.free == Some(0) {
        return p(
            format!("all {} reserved hugepages are in use (HugePages_Free is 0)", f.total.unwrap_or(0)),
            format!(
                "stop the DPDK process holding them, reserve more (sysctl -w vm.nr_hugepages=N), or run without them: add {WITHOUT_HUGEPAGES} to the EAL args"
            ),
        );
    }
    p(
        format!("EAL could not use the hugepages ({mounted}; DPDK reports any hugepage setup it cannot use as EACCES)"),
        format!(
            "check the EAL log above for the page size it wanted, that the hugetlbfs mount is writable by this user and mounted for the \
             reserved page size; or add --in-memory, or run without hugepages: {WITHOUT_HUGEPAGES}"
        ),
    )
}

fn same_dir(a: &str, b: &str) -> bool {
    let canon = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::PathBuf::from(p.trim_end_matches('/')));
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> EalArgs {
        EalArgs::parse(&s.split_whitespace().collect::<Vec<_>>()).unwrap()
    }

    fn facts(total: u64, free: u64, mounts: &[&str]) -> HugeFacts {
        HugeFacts { total: Some(total), free: Some(free), mounts: mounts.iter().map(|m| m.to_string()).collect() }
    }

    #[test]
    fn eacces_names_the_hugepage_cause_and_the_fix() {
        let mounted = facts(512, 512, &["/dev/hugepages"]);
        let e = hugepage_problem(&args("-l 0 --huge-dir /tmp/not-huge-xyz"), &mounted).unwrap();
        assert!(e.cause.contains("--huge-dir /tmp/not-huge-xyz is not a hugetlbfs mount"), "{e:?}");
        assert!(e.fix.contains("mount -t hugetlbfs") && e.fix.contains("--in-memory"), "{e:?}");
        let e = hugepage_problem(&args("-l 0"), &facts(512, 512, &[])).unwrap();
        assert!(e.cause.contains("no hugetlbfs is mounted"), "{e:?}");
        assert!(e.fix.contains("dev-hugepages.mount") && e.fix.contains("--in-memory"), "{e:?}");
        let e = hugepage_problem(&args("-l 0 --in-memory"), &facts(0, 0, &[])).unwrap();
        assert!(e.cause.contains("no hugepages are reserved") && e.fix.contains("--no-huge"), "{e:?}");
        let e = hugepage_problem(&args("-l 0"), &facts(512, 0, &["/dev/hugepages"])).unwrap();
        assert!(e.cause.contains("in use"), "{e:?}");
        // --in-memory needs no mount: not the cause then.
        let e = hugepage_problem(&args("-l 0 --in-memory"), &facts(512, 0, &[])).unwrap();
        assert!(e.cause.contains("in use"), "{e:?}");
        assert_eq!(hugepage_problem(&args("-l 0 --no-huge"), &mounted), None);
    }
}

//! `flowtwin`: the command-line front end (run, bench, ctl, check).
#![forbid(unsafe_code)]

mod bench;
mod config;
mod capture;
mod ctl;
mod logs;
mod metrics;
mod reload;
mod run;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// `flowtwin --help` and the man page's description.
const LONG_ABOUT: &str = "flowtwin terminates TCP on DPDK poll-mode cores and replicates every change of every flow \
to a hot standby before anything that depends on it leaves the machine; when the active engine dies, the standby \
announces the VIP and resumes every connection. One TOML file configures an engine (`flowtwin check-config` \
validates it); under systemd, `flowtwin@NAME.service` runs /etc/flowtwin/NAME.toml.";

/// flowtwin — a kernel-bypass DPDK TCP engine whose connections survive the death of the
/// machine serving them.
#[derive(Parser)]
#[command(name = "flowtwin", about, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an engine from a TOML config file (see README "Configuration reference").
    ///
    /// Starts the metrics server, initialises EAL with `eal.args`, starts the port and one
    /// worker per queue, and serves until SIGINT/SIGTERM, then prints port and drop statistics.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Talk to a running engine through its control socket.
    ///
    /// Commands: status (role, epoch, peer, in_sync, lag, held outputs, takeovers), takeover
    /// (standby: take the VIPs now), failback (active: hand back once the peer is in sync),
    /// flows (per worker and state), backends (proxy pools), backend add|drain|undrain|remove
    /// (change a proxy's pool on the active; its standby follows). Prints the engine's JSON
    /// reply.
    Ctl {
        /// The engine's control socket (`[sync] control` in its config).
        #[arg(long, short, default_value = "/run/flowtwin/flowtwin.sock")]
        socket: std::path::PathBuf,
        /// status | takeover | failback | flows | backends | backend
        #[arg(value_parser = CtlCommand)]
        command: String,
        /// `backend`'s: add|drain|undrain|ready|remove SERVICE ADDR:PORT [--weight W] [--pool
        /// N|default] [--force] (SERVICE as `ctl backends` prints it, vip:port).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Validate a config file without starting anything; errors name the offending key.
    CheckConfig {
        /// The config file.
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Forwarding benchmark in the style of dpdk-testpmd, to compare the two on the same ports.
    ///
    /// Everything after `--` goes to DPDK's EAL unchanged, exactly as testpmd's EAL args, e.g.
    /// `flowtwin bench --mode io -- -l 0-1 --no-huge --no-shconf -m 512 --vdev net_null0 --vdev net_null1`.
    /// Ports pair up 0<->1, 2<->3 (a lone port forwards to itself). Every worker lcore
    /// (all lcores but the main one) forwards; the main lcore prints Mpps every second.
    Bench {
        /// Forwarding mode: io | macswap | rxonly | txonly.
        #[arg(long, default_value = "io", value_parser = parse_mode)]
        mode: &'static bench::FwdMode,
        /// How long to run, in seconds (SIGINT stops earlier).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// RX and TX queues per port (streams are spread over worker lcores round-robin).
        #[arg(long, default_value_t = 1)]
        queues: u16,
        /// Mbufs in the packet pool (under --no-huge, -m must cover them: ~2.2 KiB each).
        #[arg(long, default_value_t = 16384)]
        mbufs: u32,
        /// RX/TX descriptors per queue.
        #[arg(long, default_value_t = 1024)]
        desc: u16,
        /// Print one machine-readable JSON summary line on stdout at the end.
        #[arg(long)]
        json: bool,
        /// Only the JSON line (no per-second report).
        #[arg(long)]
        quiet: bool,
        /// EAL arguments (after `--`).
        #[arg(last = true, required = true)]
        eal: Vec<String>,
    },
}

/// `flowtwin generate`, hidden: a packaging helper kept out of [`Cli`] so that the man pages
/// and completions it writes do not describe it.
#[derive(clap::Args)]
struct GenerateArgs {
    /// man: flowtwin.1 and one page per command; completions: bash (flowtwin.bash),
    /// zsh (_flowtwin), fish (flowtwin.fish).
    #[arg(value_enum)]
    what: Generated,
    /// The directory (created if missing).
    dir: std::path::PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    Man,
    Completions,
}

/// `flowtwin ctl`'s command: one of [`ctl::COMMANDS`], checked before anything is sent, so a
/// typo is "unknown command", not "cannot reach the engine". Completions offer the commands.
#[derive(Clone)]
struct CtlCommand;

impl TypedValueParser for CtlCommand {
    type Value = String;

    fn parse_ref(&self, cmd: &clap::Command, _arg: Option<&clap::Arg>, value: &std::ffi::OsStr) -> Result<String, clap::Error> {
        let v = value.to_string_lossy();
        if ctl::COMMANDS.iter().any(|(c, _)| *c == v) {
            return Ok(v.into_owned());
        }
        let list: Vec<_> = ctl::COMMANDS.iter().map(|(c, h)| format!("  {c:<9} {h}")).collect();
        let msg = format!("unknown command {v:?} (nothing was sent to the engine); the commands are:\n{}\n", list.join("\n"));
        Err(clap::Error::raw(clap::error::ErrorKind::InvalidValue, msg).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(ctl::COMMANDS.iter().map(|(c, h)| PossibleValue::new(*c).help(*h))))
    }
}

/// What `flowtwin --version` prints after the name: the crate version, the git revision it was
/// built from (build.rs), the DPDK it runs on (the loaded librte_eal, no EAL init) and the one
/// it was built against.
fn version() -> String {
    let running = flowtwin_ffi::dpdk_version();
    let running = running.strip_prefix("DPDK ").unwrap_or(&running);
    format!(
        "{} (git {}) on DPDK {running}, built with DPDK {}",
        env!("CARGO_PKG_VERSION"),
        env!("FLOWTWIN_GIT_REV"),
        env!("FLOWTWIN_BUILD_DPDK")
    )
}

/// The documented command line (what the man pages and completions describe), with the
/// version filled in.
fn public_command() -> clap::Command {
    // Built once per process; clap keeps a &'static str.
    let v: &'static str = Box::leak(version().into_boxed_str());
    Cli::command().version(v)
}

/// What parses: the documented command line plus the hidden `generate`.
fn command() -> clap::Command {
    let generate = clap::Command::new("generate")
        .about("Write the man pages or the shell completions into a directory (for packaging)")
        .hide(true);
    public_command().subcommand(<GenerateArgs as clap::Args>::augment_args(generate))
}

/// `flowtwin generate`: man pages or completions, from the same definition that parses.
fn generate(what: Generated, dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = public_command();
    match what {
        Generated::Man => clap_mangen::generate_to(cmd, dir).map_err(|e| format!("man pages into {}: {e}", dir.display()))?,
        Generated::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "flowtwin", dir)
                    .map_err(|e| format!("{shell} completions into {}: {e}", dir.display()))?;
            }
        }
    }
    Ok(())
}

fn parse_mode(s: &str) -> Result<&'static bench::FwdMode, String> {
    bench::mode_by_name(s).ok_or_else(|| {
        let names: Vec<_> = bench::MODES.iter().map(|m| format!("{} ({})", m.name, m.help)).collect();
        format!("unknown mode {s:?}; modes: {}", names.join(", "))
    })
}

/// SIGINT/SIGTERM set this; loops poll it.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            tracing::warn!(event = "signal_handler", signal = sig, error = %e, "warning: cannot install handler for signal {sig}: {e}");
        }
    }
    stop
}

/// Why a command failed: the one event `main` logs before exiting with a failure.
struct Failure {
    /// `config_refused` for a config that cannot be used, else `error`.
    event: &'static str,
    error: String,
}

impl From<String> for Failure {
    fn from(error: String) -> Failure {
        Failure { event: "error", error }
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let logs = match logs::install() {
        Ok(l) => l,
        Err(e) => {
            // No log to say it in: the environment's log settings are what is wrong.
            eprintln!("flowtwin: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match matches.subcommand() {
        Some(("generate", m)) => {
            GenerateArgs::from_arg_matches(m).map_err(|e| e.to_string()).and_then(|g| generate(g.what, &g.dir)).map_err(Failure::from)
        }
        _ => run_command(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()), &logs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            tracing::error!(event = f.event, error = %f.error, "error: {}", f.error);
            ExitCode::FAILURE
        }
    }
}

/// Read and check the config at `path`, apply its `[log]`, and log what was loaded.
fn load_config(path: &std::path::Path, logs: &logs::Logs) -> Result<config::Config, Failure> {
    let refused = |error| Failure { event: "config_refused", error };
    let c = config::Config::load(path).map_err(refused)?;
    logs.configure(&c.log.level, &c.log.format)?;
    let groups = c.groups.len().max(1);
    let (role, node_id) = c.sync.as_ref().map(|y| (y.role.name(), Some(y.node_id))).unwrap_or(("stand-alone", None));
    tracing::info!(
        event = "config_loaded",
        path = %path.display(),
        vips = c.vips.len(),
        services = c.services.len(),
        groups,
        role,
        node_id,
        "config {} loaded: {} VIP(s), {} service(s), {groups} group(s), {}",
        path.display(),
        c.vips.len(),
        c.services.len(),
        node_id.map(|n| format!("sync node {n} ({role})")).unwrap_or_else(|| role.to_string()),
    );
    Ok(c)
}

fn run_command(cli: Cli, logs: &logs::Logs) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Run { config: path } => {
            let c = load_config(&path, logs)?;
            Ok(run::run(c, stop_flag(), run::ConfigSource { path, logs: logs.clone() })?)
        }
        Cmd::Ctl { socket, command, args } => Ok(ctl::request(&socket, &std::iter::once(command).chain(args).collect::<Vec<_>>().join(" ")).and_then(|r| {
            println!("{r}");
            if r.starts_with("{\"error\"") {
                Err("the engine refused the command (see the reply above)".into())
            } else {
                Ok(())
            }
        })?),
        Cmd::CheckConfig { config } => {
            let c = load_config(&config, logs)?;
            let refused = |error| Failure { event: "config_refused", error };
            let sc = crate::config::stack_config(&c).map_err(refused)?;
            let routes = c.route_table().map_err(refused)?;
            println!("{}: ok", config.display());
            // Both engines of a pair must print the same layout (the sync Hello compares it).
            println!("groups: {} (layout {:016x})", sc.group_layout(), sc.group_digest());
            // The routing table of the connections the engine opens, as the engine looks it up
            // (longest prefix first): the VIPs' subnets on-link, then the [[route]]s.
            for r in routes.routes() {
                println!("route {r}");
            }
            Ok(())
        }
        Cmd::Bench { mode, duration, queues, mbufs, desc, json, quiet, eal } => {
            Ok(if !(duration.is_finite() && duration > 0.0) {
                Err(format!("--duration must be a positive number of seconds, got {duration}"))
            } else {
                let stop = stop_flag();
                match flowtwin_ffi::Eal::init(&eal) {
                    Err(e) => Err(format!("EAL init: {e}")),
                    Ok(e) => bench::run(
                        e,
                        bench::BenchOpts {
                            mode,
                            duration: Duration::from_secs_f64(duration),
                            queues,
                            mbufs,
                            desc,
                            json,
                            quiet,
                        },
                        stop,
                    ),
                }
            }?)
        }
    }
}

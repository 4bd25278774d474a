//! The control socket (`flowtwin ctl`): a unix stream socket, one request line in, one reply
//! out, served by a control-plane thread. Commands: `status`, `takeover`, `failback`, `flows`,
//! `backends`, `backend ...` (the one that takes arguments: a pool change).
//! Replies are JSON objects; errors are `{"error": "..."}` so scripts can check them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers one command line with a JSON reply.
pub type Handler = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Commands the socket accepts, for `--help` and error messages.
pub const COMMANDS: &[(&str, &str)] = &[
    ("status", "role, epoch, peer state, in_sync, sync lag, held outputs, takeovers, flows"),
    ("takeover", "on the standby: take the VIPs over now (as if the active had died)"),
    ("failback", "on the active: hand the VIPs back to the peer once it is in sync"),
    ("flows", "live flows per worker and TCP state"),
    ("backends", "proxy services: each backend's state, weight, connections, failures, bytes"),
    ("backend", "on the active: add|drain|undrain|remove SERVICE ADDR:PORT [--weight W] [--pool N] [--force]"),
    ("capture", "start FILE [--filter EXPR] [--count N] [--seconds S] [--snaplen N] | stop | (none: status): frames into pcapng"),
    ("reload", "read the config file again: apply what can change live (VIPs, object/echo services, [tcp], [log]) or refuse naming the keys"),
];

/// Commands that take arguments after their name.
pub const WITH_ARGS: &[&str] = &["backend", "capture"];

/// Serve `path` until `stop`. Replaces a stale socket file; refuses to run if another engine
/// answers on it.
pub fn serve(path: &Path, handler: Handler, stop: Arc<AtomicBool>) -> Result<PathBuf, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("control socket {} is in use by another engine", path.display()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let p = path.to_owned();
    std::thread::Builder::new()
        .name("ft-ctl".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut line = String::new();
                        let mut r = BufReader::new(&s);
                        if r.read_line(&mut line).is_ok() {
                            let cmd = line.trim();
                            let name = cmd.split_whitespace().next().unwrap_or_default();
                            let args_ok = name == cmd || WITH_ARGS.contains(&name);
                            let reply = if COMMANDS.iter().any(|(c, _)| *c == name) && args_ok {
                                handler(cmd)
                            } else {
                                let names: Vec<_> = COMMANDS.iter().map(|(c, _)| *c).collect();
                                format!("{{\"error\":\"unknown command {cmd:?}; commands: {}\"}}", names.join(", "))
                            };
                            let mut w = &s;
                            let _ = writeln!(w, "{reply}");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            let _ = std::fs::remove_file(&p);
        })
        .map_err(|e| e.to_string())?;
    Ok(path.to_owned())
}

/// Send one command and return the reply.
pub fn request(path: &Path, cmd: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| format!("cannot reach the engine at {}: {e} (is it running? see [sync] control in its config)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    writeln!(s, "{cmd}").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_known_commands_and_rejects_others() {
        let dir = std::env::temp_dir().join(format!("ftctl-{}", std::process::id()));
        let path = dir.join("t.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let h: Handler = Arc::new(|c: &str| format!("{{\"cmd\":\"{c}\"}}"));
        serve(&path, h.clone(), stop.clone()).unwrap();
        assert_eq!(request(&path, "status").unwrap(), "{\"cmd\":\"status\"}");
        assert_eq!(request(&path, "backend drain a b").unwrap(), "{\"cmd\":\"backend drain a b\"}", "backend takes arguments");
        assert!(request(&path, "status now").unwrap().contains("unknown command"), "status takes none");
        let e = request(&path, "reboot").unwrap();
        assert!(e.contains("unknown command") && e.contains("failback"), "{e}");
        // A second engine on the same socket is refused.
        assert!(serve(&path, h, stop.clone()).unwrap_err().contains("in use"));
        stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

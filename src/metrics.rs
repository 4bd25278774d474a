//! Prometheus text-format metrics over HTTP, served by a control-plane thread (never a
//! worker). The thread renders on each scrape from atomics the workers publish, so a scrape
//! costs the data path nothing but cache-line reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Something that appends Prometheus text exposition lines to a buffer.
pub type Renderer = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Start the metrics server on `addr`. Returns the bound address (port 0 picks one).
/// Must be called before EAL init so the thread is not pinned to a worker's CPU.
pub fn serve(addr: SocketAddr, render: Renderer, stop: Arc<AtomicBool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("ft-metrics".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    let mut req = [0u8; 2048];
                    let n = s.read(&mut req).unwrap_or(0);
                    let head = String::from_utf8_lossy(&req[..n]);
                    let path = head.split_whitespace().nth(1).unwrap_or("/");
                    let (status, body) = if path == "/metrics" || path == "/" {
                        let mut b = String::with_capacity(8192);
                        render(&mut b);
                        ("200 OK", b)
                    } else {
                        ("404 Not Found", "try /metrics\n".to_owned())
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })?;
    Ok(bound)
}

/// Append one metric family header.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Append one sample: `name{labels} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    use std::fmt::Write as _;
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_rendered_text_over_http() {
        let stop = Arc::new(AtomicBool::new(false));
        let r: Renderer = Arc::new(|out: &mut String| {
            family(out, "flowtwin_test_total", "counter", "a test");
            sample(out, "flowtwin_test_total", &[("port", "0"), ("name", "a\"b")], 42);
        });
        let addr = serve("127.0.0.1:0".parse().unwrap(), r, stop.clone()).unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("# TYPE flowtwin_test_total counter"));
        assert!(body.contains("flowtwin_test_total{port=\"0\",name=\"a\\\"b\"} 42"));
    }
}

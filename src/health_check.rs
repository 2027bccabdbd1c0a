//! `sluice --health-check`: ask a running server's `/health` on its REST port and exit 0 when
//! it answers 200, 1 otherwise. For container health checks: the image needs no curl, and the
//! probe reads the same flags, environment and config file as the server, so it always asks
//! the port the server listens on.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// Connect, send and read timeouts each; the container HEALTHCHECK allows more than the sum.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read (the health JSON is a few hundred bytes).
const MAX_ANSWER: u64 = 64 * 1024;

/// Probe and return the process exit code. Prints the answer's body (Docker keeps it in
/// `docker inspect`'s health log) or the error.
pub fn run(cfg: &Config) -> i32 {
    let host = match cfg.bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        a => a,
    };
    let addr = SocketAddr::new(host, cfg.rest_port);
    match probe(addr) {
        Ok((200, body)) => {
            println!("{body}");
            0
        }
        Ok((code, body)) => {
            println!("unhealthy: HTTP {code} from {addr}: {body}");
            1
        }
        Err(e) => {
            println!("unhealthy: {addr}: {e}");
            1
        }
    }
}

fn probe(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    Ok((code, body))
}

//! Reading what crossed the wire: HTTP request and status lines, socket addresses, the
//! kernel's TCP tables, error codes.

use std::path::Path;

const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

/// `GET /stock/7 HTTP/1.1\r\nHost: inventory:8080\r\n...` → method, target, host.
pub(super) fn parse_http_request(bytes: &[u8]) -> Option<(String, String, Option<String>)> {
    let text = std::str::from_utf8(bytes).ok().or_else(|| {
        // The copy may end inside a multi-byte character.
        let valid = std::str::from_utf8(bytes).err()?.valid_up_to();
        std::str::from_utf8(&bytes[..valid]).ok()
    })?;
    let line_end = text.find("\r\n")?;
    let mut parts = text[..line_end].split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !HTTP_METHODS.contains(&method) || !version.starts_with("HTTP/1.") || target.is_empty() {
        return None;
    }
    let host = text[line_end + 2..].split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host")
            .then(|| value.trim().to_owned())
    });
    Some((method.to_owned(), target.to_owned(), host))
}

/// `HTTP/1.1 404 Not Found` → 404.
pub(super) fn parse_http_status(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// `sockaddr_in` / `sockaddr_in6` / `sockaddr_un` as text.
pub(super) fn sockaddr_text(bytes: &[u8]) -> Option<String> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    match family as i32 {
        libc::AF_INET => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(format!("{}:{port}", std::net::Ipv4Addr::from(ip)))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(ip)))
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..)?;
            let path = path.split(|&b| b == 0).next().unwrap_or(path);
            Some(format!("unix:{}", String::from_utf8_lossy(path)))
        }
        _ => None,
    }
}

/// The remote address of the TCP socket with this inode.
pub(super) fn tcp_peer(proc_pid: &Path, inode: &str) -> Option<String> {
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_pid.join(table)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(9) == Some(&inode) {
                return fields.get(2).and_then(|a| proc_net_address(a));
            }
        }
    }
    None
}

/// `0100007F:1F90` (little-endian words) → `127.0.0.1:8080`.
fn proc_net_address(text: &str) -> Option<String> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match ip.len() {
        8 => {
            let word = u32::from_str_radix(ip, 16).ok()?;
            Some(format!(
                "{}:{port}",
                std::net::Ipv4Addr::from(word.to_le_bytes())
            ))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            let ip = std::net::Ipv6Addr::from(bytes);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{ip}]:{port}"),
            })
        }
        _ => None,
    }
}

pub(super) fn errno_text(ret: i64) -> String {
    let errno = (-ret) as i32;
    let name = std::io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" → "No such file or directory (errno 2)".
    match name.rsplit_once(" (os error") {
        Some((text, _)) => format!("{text} (errno {errno})"),
        None => name,
    }
}

pub(super) fn sqlite_error(rc: i32) -> String {
    let name = match rc & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => "SQLITE error",
    };
    format!("{name} ({rc})")
}

/// The name of a failed libpq result status (`PGRES_FATAL_ERROR`), `None` for success.
pub(super) fn pg_failure(status: i32) -> Option<&'static str> {
    match status {
        5 => Some("PGRES_BAD_RESPONSE"),
        7 => Some("PGRES_FATAL_ERROR"),
        11 => Some("PGRES_PIPELINE_ABORTED"),
        _ => None,
    }
}

pub(super) fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_and_status_lines() {
        assert_eq!(
            parse_http_request(
                b"GET /stock/7?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"
            ),
            Some((
                "GET".into(),
                "/stock/7?x=1".into(),
                Some("127.0.0.1:8080".into())
            ))
        );
        assert_eq!(
            parse_http_request(b"POST /orders HTTP/1.0\r\n"),
            Some(("POST".into(), "/orders".into(), None))
        );
        assert_eq!(parse_http_request(b"GETTING /x HTTP/1.1\r\n"), None);
        assert_eq!(parse_http_request(b"GET /x SPDY\r\n"), None);
        assert_eq!(parse_http_request(b"GET /x HTTP/1.1"), None, "no line end");
        assert_eq!(parse_http_status(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_http_status(b"HTTP/1.0 200 OK"), Some(200));
        assert_eq!(parse_http_status(b"HTTP/2 200"), None);
        assert_eq!(parse_http_status(b"HTTP/1.1 2x0"), None);
    }

    #[test]
    fn socket_addresses() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(sockaddr_text(&v4).as_deref(), Some("127.0.0.1:8080"));
        let mut unix = vec![0u8; 20];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        unix[2..12].copy_from_slice(b"/run/x.sk\0");
        assert_eq!(sockaddr_text(&unix).as_deref(), Some("unix:/run/x.sk"));
        assert_eq!(
            proc_net_address("0100007F:1F90").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            proc_net_address("0000000000000000FFFF00000100007F:0050").as_deref(),
            Some("127.0.0.1:80")
        );
    }

    #[test]
    fn errors_read_as_text() {
        assert_eq!(errno_text(-2), "No such file or directory (errno 2)");
        assert_eq!(sqlite_error(19), "SQLITE_CONSTRAINT (19)");
        assert_eq!(sqlite_error(2067), "SQLITE_CONSTRAINT (2067)");
    }
}

//! A minimal HTTP/1.1 client for load generators: `GET` over keep-alive TCP connections,
//! one request at a time per connection, each answer read to its end (`Content-Length`,
//! chunked, or the connection's close). It costs a fraction of a general-purpose client's
//! CPU per request (BENCHMARKS.md, "Pipeline"), which matters when the generator shares
//! the cores with what it measures.
//!
//! Plain `http://host:port` only: no TLS, redirects, pipelining, compression or proxies.
//! A request on a kept-alive connection that the server closed meanwhile (its keep-alive
//! timeout) is sent once more on a new connection, as browsers do for idempotent methods;
//! any other failure is the caller's to count.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go: the address to connect to and the `Host` header to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

/// Splits an `http://host[:port]/path?query` URL into its target and the request target
/// (path and query, `/` when empty).
pub fn parse_url(url: &str) -> anyhow::Result<(Target, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    anyhow::ensure!(!authority.is_empty(), "{url}: no host");
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    Ok((
        Target {
            addr,
            host: authority.to_string(),
        },
        path,
    ))
}

/// An answer: its status, its `Location`, and its body when asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyLength {
    Fixed(usize),
    Chunked,
    /// Read until the server closes the connection.
    UntilClose,
}

/// The status line and headers of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    /// Bytes of the status line and headers, the blank line included.
    len: usize,
    status: u16,
    location: Option<String>,
    body: BodyLength,
    /// Whether the connection can carry another request after this answer.
    keep_alive: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Parses the head at the start of `buf`; `None` while the blank line has not arrived.
fn parse_head(buf: &[u8], method_is_head: bool) -> io::Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(invalid("answer head over 64 KiB"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("answer head not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1 answer"));
    }
    let mut keep_alive = version == "HTTP/1.1";
    let (mut length, mut chunked, mut location) = (None, false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid("bad header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                keep_alive = false;
            } else if value.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body = if method_is_head || status < 200 || status == 204 || status == 304 {
        BodyLength::Fixed(0)
    } else if chunked {
        BodyLength::Chunked
    } else if let Some(n) = length {
        BodyLength::Fixed(n)
    } else {
        keep_alive = false;
        BodyLength::UntilClose
    };
    Ok(Some(Head {
        len: end + 4,
        status,
        location,
        body,
        keep_alive,
    }))
}

/// Decodes a chunked body at the start of `buf`: `None` while it is incomplete, else the
/// data and the bytes the body took (trailers included).
fn parse_chunked(buf: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line =
            std::str::from_utf8(&buf[at..at + line_end]).map_err(|_| invalid("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, then a blank line.
            loop {
                let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((data, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        at += size + 2;
    }
}

/// One kept-alive connection and its buffers.
pub struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
    /// Whether a request went over it already: a failure before any answer byte is then
    /// the server's keep-alive timeout, and worth one more try.
    used: bool,
}

impl Connection {
    pub async fn open(target: &Target) -> io::Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            request: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
            used: false,
        })
    }

    /// Sends `GET path` with `headers` and reads the answer. Whether the connection can
    /// carry another request is in the second value.
    async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        keep_body: bool,
    ) -> io::Result<(Answer, bool)> {
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.request.extend_from_slice(host.as_bytes());
        for (name, value) in headers {
            self.request.extend_from_slice(b"\r\n");
            self.request.extend_from_slice(name.as_bytes());
            self.request.extend_from_slice(b": ");
            self.request.extend_from_slice(value.as_bytes());
        }
        self.request.extend_from_slice(b"\r\n\r\n");
        self.buf.clear();
        self.used = true;
        self.stream.write_all(&self.request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf, false)? {
                break head;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the answer's head",
                ));
            }
        };
        let mut answer = Answer {
            status: head.status,
            location: head.location,
            body: Vec::new(),
        };
        match head.body {
            BodyLength::Fixed(n) => {
                while self.buf.len() < head.len + n {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                if keep_body {
                    answer.body = self.buf[head.len..head.len + n].to_vec();
                }
            }
            BodyLength::Chunked => loop {
                if let Some((data, _)) = parse_chunked(&self.buf[head.len..])? {
                    if keep_body {
                        answer.body = data;
                    }
                    break;
                }
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            },
            BodyLength::UntilClose => {
                while self.fill().await? > 0 {}
                if keep_body {
                    answer.body = self.buf[head.len..].to_vec();
                }
            }
        }
        Ok((answer, head.keep_alive))
    }

    /// Reads what the socket holds into the buffer; 0 at the connection's end.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(self.buf.capacity().max(4096));
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

/// Kept-alive connections to one target, handed out one request at a time; as many as
/// the callers use at once (bound them yourself, e.g. with a semaphore).
pub struct Pool {
    target: Target,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub fn new(target: Target) -> Arc<Self> {
        Arc::new(Self {
            target,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `GET path` on an idle connection (a new one when none is idle), which goes back to
    /// the pool after a complete answer that allows it.
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        keep_body: bool,
    ) -> io::Result<Answer> {
        // The most recently used first: the others may have met the server's idle timeout.
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match idle {
            Some(c) => c,
            None => Connection::open(&self.target).await?,
        };
        let reused = connection.used;
        let result = connection
            .get(&self.target.host, path, headers, keep_body)
            .await;
        let (answer, reusable) = match result {
            Ok(done) => done,
            // A kept-alive connection the server had closed: nothing was answered, so
            // the request is sent once more on a new connection.
            Err(e) if reused && connection.buf.is_empty() && is_closed(&e) => {
                connection = Connection::open(&self.target).await?;
                connection
                    .get(&self.target.host, path, headers, keep_body)
                    .await?
            }
            Err(e) => return Err(e),
        };
        if reusable {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(connection);
            }
        }
        Ok(answer)
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_target_and_path() {
        let (t, p) = parse_url("http://127.0.0.1:8080/c/flow?sub_id=a&x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(p, "/c/flow?sub_id=a&x=1");
        let (t, p) = parse_url("http://127.0.0.1?a=1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(p, "/?a=1");
        assert_eq!(parse_url("http://127.0.0.1:9").unwrap().1, "/");
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn a_redirect_head_gives_status_location_and_length() {
        let answer = b"HTTP/1.1 302 Found\r\ncontent-length: 0\r\nLocation: https://o.example/?c=abc&s=1\r\ndate: x\r\n\r\n";
        assert_eq!(
            parse_head(&answer[..answer.len() - 1], false).unwrap(),
            None
        );
        let head = parse_head(answer, false).unwrap().unwrap();
        assert_eq!(head.len, answer.len());
        assert_eq!(head.status, 302);
        assert_eq!(
            head.location.as_deref(),
            Some("https://o.example/?c=abc&s=1")
        );
        assert_eq!(head.body, BodyLength::Fixed(0));
        assert!(head.keep_alive);
    }

    #[test]
    fn connection_close_http_1_0_and_no_length_end_keep_alive() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        let head = parse_head(close, false).unwrap().unwrap();
        assert!(!head.keep_alive);
        assert_eq!(head.body, BodyLength::Fixed(2));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert!(!parse_head(old, false).unwrap().unwrap().keep_alive);
        let old_kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n";
        assert!(parse_head(old_kept, false).unwrap().unwrap().keep_alive);
        let unbounded = b"HTTP/1.1 200 OK\r\n\r\nbody until close";
        let head = parse_head(unbounded, false).unwrap().unwrap();
        assert_eq!(head.body, BodyLength::UntilClose);
        assert!(!head.keep_alive);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_head(no_content, false).unwrap().unwrap().body,
            BodyLength::Fixed(0)
        );
        assert!(parse_head(b"SSH-2.0 x\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n", false).is_err());
    }

    #[test]
    fn chunked_bodies_are_decoded_once_complete() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse_head(head, false).unwrap().unwrap().body,
            BodyLength::Chunked
        );
        let body =
            b"4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..body.len() {
            assert_eq!(parse_chunked(&body[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (data, used) = parse_chunked(body).unwrap().unwrap();
        assert_eq!(data, b"Wikipedia in \r\n\r\nchunks.");
        assert_eq!(used, body.len());
        assert!(parse_chunked(b"zz\r\n").is_err());
        assert!(parse_chunked(b"2\r\nabXY0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn a_pool_reuses_its_connection_and_survives_the_server_closing_it() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A server that answers two requests per connection, then closes it without a
        // word, as a keep-alive timeout does; it counts the connections it accepted.
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut buf = vec![0u8; 4096];
                let mut answered = 0;
                while answered < 2 {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    if got.is_empty() {
                        break;
                    }
                    let text = String::from_utf8_lossy(&got).to_string();
                    let path = text.split(' ').nth(1).unwrap_or_default().to_string();
                    let reply = format!(
                        "HTTP/1.1 302 Found\r\nLocation: https://o.example{path}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    );
                    socket.write_all(reply.as_bytes()).await.unwrap();
                    answered += 1;
                }
                drop(socket);
                if accepted == 3 {
                    return accepted;
                }
            }
        });
        let pool = Pool::new(Target {
            addr,
            host: addr.to_string(),
        });
        for n in 0..5 {
            let answer = pool
                .get(&format!("/c/f?n={n}"), &[("User-Agent", "t")], true)
                .await
                .unwrap();
            assert_eq!(answer.status, 302);
            assert_eq!(
                answer.location.as_deref(),
                Some(format!("https://o.example/c/f?n={n}").as_str())
            );
            assert_eq!(answer.body, b"abc");
            // Lets the server's close reach the client before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(pool);
        // Five requests over three connections: two each, the third retried once on a
        // fresh connection after the server closed the kept-alive one.
        assert_eq!(server.await.unwrap(), 3);
    }
}

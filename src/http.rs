//! Just enough HTTP/1.1 for a metrics and probe endpoint: one request per
//! connection, GET only, bodies sized with Content-Length, `Connection:
//! close`. Prometheus and Kubernetes probes need nothing more, and a crate
//! would bring a server framework to answer three paths.
//!
//! Reads are bounded in size (`MAX_HEAD`) and time (`READ_TIMEOUT`), so a
//! slow or hostile client costs one small task for a few seconds at most.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The request line and headers must fit in this.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
pub struct Request {
  pub method: String,
  /// Without the query string.
  pub path: String,
}

#[derive(Debug, PartialEq)]
pub enum BadRequest {
  /// No complete head within `MAX_HEAD` bytes.
  TooLarge,
  /// Not `METHOD SP target SP HTTP/1.x`.
  Malformed,
  /// The client closed or stalled before the head was complete.
  Incomplete,
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, BadRequest> {
  let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed)?;
  let line = text.split("\r\n").next().unwrap_or("");
  let mut parts = line.split(' ');
  let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
  else {
    return Err(BadRequest::Malformed);
  };
  if method.is_empty() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
    return Err(BadRequest::Malformed);
  }
  let path = target.split('?').next().unwrap_or(target);
  Ok(Request {
    method: method.to_owned(),
    path: path.to_owned(),
  })
}

/// Reads one request head from `stream`, within `MAX_HEAD` and `READ_TIMEOUT`.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, BadRequest> {
  let mut buf = Vec::with_capacity(512);
  let read = async {
    let mut chunk = [0u8; 1024];
    loop {
      if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
        return parse_head(&buf[..end]);
      }
      if buf.len() >= MAX_HEAD {
        return Err(BadRequest::TooLarge);
      }
      let want = chunk.len().min(MAX_HEAD - buf.len());
      match stream.read(&mut chunk[..want]).await {
        Ok(0) | Err(_) => return Err(BadRequest::Incomplete),
        Ok(n) => buf.extend_from_slice(&chunk[..n]),
      }
    }
  };
  tokio::time::timeout(READ_TIMEOUT, read)
    .await
    .unwrap_or(Err(BadRequest::Incomplete))
}

pub struct Response {
  pub status: u16,
  pub content_type: &'static str,
  pub body: String,
  /// For 405: what is allowed.
  pub allow: Option<&'static str>,
}

impl Response {
  pub fn text(status: u16, body: impl Into<String>) -> Response {
    Response {
      status,
      content_type: "text/plain; charset=utf-8",
      body: body.into(),
      allow: None,
    }
  }
}

fn reason(status: u16) -> &'static str {
  match status {
    200 => "OK",
    400 => "Bad Request",
    404 => "Not Found",
    405 => "Method Not Allowed",
    431 => "Request Header Fields Too Large",
    503 => "Service Unavailable",
    _ => "Unknown",
  }
}

/// The whole response, head and body, as bytes.
pub fn render(r: &Response) -> Vec<u8> {
  let mut head = format!(
    "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
    r.status,
    reason(r.status),
    r.content_type,
    r.body.len()
  );
  if let Some(allow) = r.allow {
    head.push_str(&format!("Allow: {allow}\r\n"));
  }
  head.push_str("\r\n");
  let mut out = head.into_bytes();
  out.extend_from_slice(r.body.as_bytes());
  out
}

/// Writes the response and closes the write side (within `READ_TIMEOUT`:
/// a client that does not read must not hold the task).
pub async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, r: &Response) -> io::Result<()> {
  let bytes = render(r);
  let write = async {
    stream.write_all(&bytes).await?;
    stream.shutdown().await
  };
  tokio::time::timeout(READ_TIMEOUT, write)
    .await
    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn parses_the_request_line_and_drops_the_query() {
    let r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a").unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/metrics");
    assert_eq!(parse_head(b"GET /metrics"), Err(BadRequest::Malformed));
    assert_eq!(parse_head(b"GET metrics HTTP/1.1"), Err(BadRequest::Malformed));
    assert_eq!(parse_head(b"GET / HTTP/2 x"), Err(BadRequest::Malformed));
    assert_eq!(parse_head(b"\xff / HTTP/1.1"), Err(BadRequest::Malformed));
  }

  #[test]
  fn renders_content_length_and_close() {
    let mut r = Response::text(405, "no\n");
    r.allow = Some("GET");
    let text = String::from_utf8(render(&r)).unwrap();
    assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
    assert!(text.contains("Content-Length: 3\r\n"));
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.contains("Allow: GET\r\n"));
    assert!(text.ends_with("\r\n\r\nno\n"));
  }

  #[tokio::test]
  async fn reads_a_head_split_across_reads_and_bounds_its_size() {
    let (mut client, mut server) = tokio::io::duplex(64);
    tokio::spawn(async move {
      client.write_all(b"GET /readyz HT").await.unwrap();
      client.write_all(b"TP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    });
    assert_eq!(read_request(&mut server).await.unwrap().path, "/readyz");

    let (mut client, mut server) = tokio::io::duplex(MAX_HEAD * 2);
    client.write_all(&vec![b'a'; MAX_HEAD + 10]).await.unwrap();
    assert_eq!(read_request(&mut server).await, Err(BadRequest::TooLarge));

    let (client, mut server) = tokio::io::duplex(64);
    drop(client);
    assert_eq!(read_request(&mut server).await, Err(BadRequest::Incomplete));
  }
}

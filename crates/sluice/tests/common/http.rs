//! A `sluice serve` process for tests, and a minimal blocking HTTP/1.1 client (keep-alive,
//! `Content-Length` bodies: what the server sends).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::wait::{Deadline, LineLog};

/// A running `sluice serve`, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: String,
    /// What it writes to stderr.
    stderr: LineLog,
}

impl Server {
    /// Starts `sluice serve PIPELINE --listen 127.0.0.1:0 ARGS...` with `env` and waits until
    /// it listens (its `... on http://ADDR` line on stderr).
    pub fn start(pipeline: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = super::sluice();
        cmd.arg("serve")
            .arg(pipeline)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start sluice serve");
        let stderr = LineLog::spawn(child.stderr.take().expect("stderr"));
        let addr = stderr.wait_for(
            "sluice serve to listen (its \"on http://\" line)",
            Duration::from_secs(30),
            |lines| {
                lines.iter().find_map(|line| {
                    let rest = line.split(" on http://").nth(1)?;
                    Some(rest.split_whitespace().next().unwrap_or("").to_owned())
                })
            },
        );
        Server {
            child,
            addr,
            stderr,
        }
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Http {
        Http::connect(&self.addr)
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit and for its stderr to
    /// be read to the end; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Deadline::after(Duration::from_secs(30), "sluice serve to exit on SIGTERM");
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            deadline.pause(Duration::from_millis(20), || self.log());
        };
        self.stderr.join(Duration::from_secs(30));
        status.success()
    }

    /// Kills the process with SIGKILL (no chance to finish anything) and waits for it.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address it listens on.
    #[allow(dead_code)]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// What it wrote to stderr.
    pub fn log(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection (opened again after a `Connection: close` response).
pub struct Http {
    addr: String,
    stream: BufReader<TcpStream>,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    /// Connects to `addr`.
    pub fn connect(addr: &str) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Http {
            addr: addr.to_owned(),
            stream: BufReader::new(stream),
        }
    }

    /// Sends a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).expect("send head");
        s.write_all(body).expect("send body");
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').expect("header line");
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().expect("content-length");
            }
            headers.push((name, value));
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).expect("body");
        if headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close")
        {
            *self = Http::connect(&self.addr.clone());
        }
        Response {
            status,
            headers,
            body,
        }
    }

    /// `POST /v1/events`.
    pub fn post_events(&mut self, body: &[u8]) -> Response {
        self.request("POST", "/v1/events", &[], body)
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }
}

//! The monitor's API: a Unix socket `api.sock` in the container's directory; one JSON request
//! line per connection, one JSON response line back (sent when the request is done: `stop` and
//! `wait` answer once the container has ended).
//!
//! State directories can be deeper than a socket path may be long (108 bytes), so both sides
//! reach the socket through `/proc/self/fd/<dir fd>/api.sock`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Largest request or response line.
pub const MAX_LINE: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// Send a signal to the container's process.
    Kill { signal: i32 },
    /// `signal` (the container's stop signal), SIGKILL after `timeout` seconds, then the VM
    /// goes; answered once ended.
    Stop {
        timeout: u64,
        #[serde(default = "sigterm")]
        signal: i32,
    },
    /// Answered once the container has ended.
    Wait,
}

fn sigterm() -> i32 {
    libc::SIGTERM
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The container's exit code, once it has ended.
    pub exit_code: Option<i32>,
    /// Why the request failed.
    pub error: Option<String>,
}

/// A short path to `name` in `dir` and the open directory it goes through (keep it open while
/// using the path).
fn short_path(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
    let d = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    Ok((d, p))
}

/// Listens on the container directory's API socket.
pub fn listen(dir: &Path) -> Result<UnixListener> {
    let (_d, path) = short_path(dir, "api.sock")?;
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", dir.join("api.sock").display()))
}

/// Sends `req` to the monitor of the container in `dir` and waits for the answer
/// (`timeout`: `None` waits as long as it takes).
pub fn call(dir: &Path, req: Request, timeout: Option<Duration>) -> Result<Response> {
    let (_d, path) = short_path(dir, "api.sock")?;
    let stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the container's monitor at {}",
            dir.join("api.sock").display()
        )
    })?;
    stream
        .set_read_timeout(timeout)
        .context("cannot set the API timeout")?;
    let mut line = serde_json::to_vec(&req).context("cannot encode the request")?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .context("cannot send the request to the monitor")?;
    let mut answer = String::new();
    BufReader::new((&stream).take_bounded())
        .read_line(&mut answer)
        .context("no answer from the container's monitor")?;
    serde_json::from_str(&answer).context("the monitor's answer is malformed")
}

/// Reads one request from a connection (server side).
pub fn read_request(stream: &UnixStream) -> Result<Request> {
    let mut line = String::new();
    BufReader::new(stream.take_bounded())
        .read_line(&mut line)
        .context("cannot read the request")?;
    serde_json::from_str(&line).context("malformed request")
}

/// Writes the response (server side).
pub fn respond(mut stream: &UnixStream, resp: &Response) -> Result<()> {
    let mut line = serde_json::to_vec(resp).context("cannot encode the response")?;
    line.push(b'\n');
    stream.write_all(&line).context("cannot answer")
}

/// `Read::take(MAX_LINE)` on a borrowed stream.
trait TakeBounded {
    fn take_bounded(self) -> std::io::Take<Self>
    where
        Self: Sized;
}

impl<'a> TakeBounded for &'a UnixStream {
    fn take_bounded(self) -> std::io::Take<&'a UnixStream> {
        std::io::Read::take(self, MAX_LINE)
    }
}

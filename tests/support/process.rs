//! Child processes killed when the test ends, whichever way it ends: the real
//! `chat_exporter` binary with its output captured, and the tools beside it (Prometheus,
//! Alertmanager) with their output in a log file.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ExporterProcess {
    pub child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    /// e.g. http://127.0.0.1:PORT/metrics
    pub metrics_url: String,
}

impl ExporterProcess {
    /// Starts the binary with only `env` (and `PATH`) in its environment, and waits for its
    /// "listening on" line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ExporterProcess {
        Self::spawn(Self::command(args, env))
    }

    /// The command `start` runs, for a caller to adjust (e.g. the user it runs as).
    pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat_exporter"));
        cmd.args(args).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `cmd` (see [`ExporterProcess::command`]; or a wrapper such as `sh -c 'ulimit
    /// ...; exec ...'`) and waits for its "listening on" line.
    pub fn spawn(mut cmd: Command) -> ExporterProcess {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start chat_exporter");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let out_buf = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut b = out_buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        let mut err = child.stderr.take().unwrap();
        let err_buf = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                err_buf.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let metrics_url = loop {
            if let Some(url) = stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.split("chat_exporter listening on ").nth(1).map(|u| u.trim().to_string()))
            {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chat_exporter exited with {status}: {}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "chat_exporter did not say where it listens");
            std::thread::sleep(Duration::from_millis(20));
        };
        ExporterProcess { child, stdout, stderr, metrics_url }
    }

    /// `host:port` from the "listening on" line.
    pub fn address(&self) -> String {
        self.metrics_url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_string()
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn base_url(&self) -> String {
        self.metrics_url.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap()
    }

    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout.lock().unwrap(), self.stderr.lock().unwrap())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ExporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- chat_exporter output ----\n{}---- end ----", self.all_output());
        }
    }
}

/// A tool beside the exporter (Prometheus, Alertmanager), its stdout and stderr in
/// `DIR/NAME.log`.
pub struct ToolProcess {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl ToolProcess {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> ToolProcess {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        command.stdout(Stdio::from(out.try_clone().expect("log file"))).stderr(Stdio::from(out)).stdin(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        ToolProcess { name: name.to_string(), child, log }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last 40 lines of its log, to explain a failure.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- last lines of {} log ({}):\n{}", self.name, self.log.display(), lines[start..].join("\n"))
    }
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat_exporter"));
    cmd.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run chat_exporter");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary as [`run_to_end`] does, but gives up after `limit`: `None` when it is
/// still running then (it is killed), for a start that must be refused and would
/// otherwise serve forever.
pub fn run_to_end_within(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Option<(i32, String, String)> {
    let mut command = ExporterProcess::command(args, env);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().expect("run chat_exporter");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.expect("wait for chat_exporter");
            Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            None
        }
    }
}

//! A server process under test: started pinned to the server CPUs with `taskset`, ready once its
//! TCP port accepts, killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct Pinned {
    child: Child,
    /// The server's own pid: `taskset` execs it.
    pub pid: u32,
}

impl Pinned {
    /// Runs `program` with what `configure` adds to its command line, on `cpus` and in the network
    /// namespace `netns` if one is named, and waits up to 20 s for `ready` to accept TCP
    /// connections. (`ip netns exec` and `taskset` both exec, so the child's pid is the
    /// server's.)
    pub fn start(
        netns: Option<&str>,
        name: &str,
        cpus: &str,
        program: &std::path::Path,
        ready: SocketAddr,
        configure: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Self> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "taskset"]);
                cmd
            }
            None => Command::new("taskset"),
        };
        cmd.arg("-c").arg(cpus).arg(program);
        configure(&mut cmd);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let server = Pinned {
            pid: child.id(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(ready).is_err() {
            if Instant::now() > deadline {
                bail!("{name} did not start listening on {ready}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

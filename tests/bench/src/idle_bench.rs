//! What the agent costs when nothing asks it for anything: its RSS and CPU with no capture
//! selecting its pod (so no runtime sampling), and what one runtime sample costs the app
//! when sampling is on.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use biometrics_test_support::{ChildGuard, GoTarget, http_get, wait_for_listener};

use crate::{LOCALHOST, Scale, mib};

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..].split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a number");
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

/// The idle agent's footprint and one sample's cost to the app.
pub fn run(agent_bin: &Path, dir: &Path, scale: Scale) {
    // A target without workloads, so its CPU time is what serving the agent costs it.
    let target = &GoTarget::start_idle(SocketAddr::new(LOCALHOST, biometrics_test_support::free_port(LOCALHOST)));
    let seconds = scale.pick(300, 5) as u64;
    println!(
        "== agent: idle cost with no capture selecting its pod over {seconds} s (goals: RSS <= 8 MiB, CPU <= 0.1 % of a core)"
    );
    let addr = SocketAddr::new(LOCALHOST, biometrics_test_support::free_port(LOCALHOST));
    let agent = ChildGuard::spawn(
        "biometrics-agent",
        Command::new(agent_bin)
            .args(["--listen", &addr.to_string(), "--pod-name", "bench", "--pod-namespace", "bench"])
            .arg("--profiles-dir")
            .arg(dir.join("idle-profiles"))
            .arg("--target-port")
            .arg(target.addr.port().to_string())
            .env("BIOMETRICS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_listener(addr, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let (cpu_before, app_before) = (cpu_seconds(agent.pid()), cpu_seconds(target.pid()));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = started.elapsed().as_secs_f64();
    let agent_cpu = (cpu_seconds(agent.pid()) - cpu_before) / wall * 100.0;
    let app_cpu = (cpu_seconds(target.pid()) - app_before) / wall * 100.0;
    println!(
        "idle agent: RSS {:.1} MiB, CPU {agent_cpu:.3} % of a core; its (idle) app {app_cpu:.3} %: nothing was read from it",
        mib(biometrics_test_support::rss_bytes(agent.pid()))
    );
    // One runtime sample as the agent takes it: the heap and goroutine texts.
    let samples = scale.pick(200, 20);
    let before = cpu_seconds(target.pid());
    let started = Instant::now();
    for _ in 0..samples {
        assert!(!http_get(target.addr, "/debug/pprof/heap?debug=1").is_empty());
        assert!(!http_get(target.addr, "/debug/pprof/goroutine?debug=1").is_empty());
    }
    let per_sample = (cpu_seconds(target.pid()) - before) / samples as f64;
    println!(
        "one runtime sample costs the Go target {:.2} ms of CPU ({:.2} ms wall); at the default 10 s interval {:.3} % of a core, only while a capture selects the pod",
        per_sample * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0 / samples as f64,
        per_sample / 10.0 * 100.0
    );
}

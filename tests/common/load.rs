//! Running `reel load` from a test: wait for it (bounded) and read its JSON report.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// Waits for a `reel load` started with `--json` and piped stdout/stderr; kills it and panics
/// if it has not ended by itself within 90 s. Returns its output and the last stdout line
/// parsed as JSON (panicking with both streams when that line is not JSON).
pub fn finish(mut child: Child) -> (Output, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("wait for reel load").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("reel load did not end by itself within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("reel load output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let json = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last line of stdout is not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

//! `crm-sync schedule CONFIG`: starts the seed 003 jobs of a job file and
//! stops on a signal; a broken job file is exit code 2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn schedule_starts_on_the_bookings_job_and_refuses_a_broken_file() {
    let dir = std::env::temp_dir().join(format!("crm-schedule-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let job = dir.join("bookings.yaml");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/bookings/bookings.yaml"
        ),
        &job,
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_crm-sync");
    let mut child = Command::new(bin)
        .arg("schedule")
        .arg(&job)
        .args(["--id", "test-scheduler"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("scheduling"), "{line:?}");
    // Its state store (next to the job file, the destination's SQLite file)
    // now knows the job's connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("bookings.db").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.join("bookings.db").exists());
    child.kill().unwrap();
    child.wait().unwrap();

    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, "name: x\nsheet: {spreadsheet_id: 1\n").unwrap();
    let out = Command::new(bin)
        .arg("schedule")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

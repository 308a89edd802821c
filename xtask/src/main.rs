//! The project's routine commands, one entry point for people and CI.
//!
//! ```text
//! cargo xtask services   make sure PostgreSQL and MariaDB are up (start them if not)
//! cargo xtask browser    make sure headless Chromium and ChromeDriver are installed (apt-get)
//! cargo xtask test       services and the browser, then the whole test suite
//! cargo xtask lint       cargo fmt --check and clippy -D warnings
//! cargo xtask deny       cargo deny, fully offline, against the vendored advisory database
//! cargo xtask ci         lint, test, deny: what .ci/run runs
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let task = env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "services" => services(),
        "browser" => browser(),
        "test" => services().and_then(|()| browser()).and_then(|()| test()),
        "lint" => lint(),
        "deny" => deny(),
        "ci" => ci(),
        _ => {
            eprintln!("usage: cargo xtask <services|browser|test|lint|deny|ci>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> Result {
    lint()?;
    services()?;
    browser()?;
    test()?;
    deny()
}

fn root() -> PathBuf {
    // xtask/ lives directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run(program: &str, args: &[&str]) -> Result {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn lint() -> Result {
    run(&cargo(), &["fmt", "--all", "--check"])?;
    run(
        &cargo(),
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// The README's test command runs this: every crate, every feature (the
/// simulators are behind `sim`), against the local databases.
fn test() -> Result {
    run(&cargo(), &["test", "--workspace", "--all-features"])
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn wait_for(port: u16, name: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if port_open(port) {
            return Ok(());
        }
        sleep(Duration::from_millis(500));
    }
    Err(format!("{name} did not open 127.0.0.1:{port} within 60 s"))
}

/// Starts PostgreSQL and MariaDB when they are not listening. The database
/// tests need both, and with `CI` set they fail rather than skip.
fn services() -> Result {
    if !port_open(5432) {
        eprintln!("PostgreSQL is not listening on 127.0.0.1:5432; starting it");
        let versions = std::fs::read_dir("/etc/postgresql")
            .map_err(|e| format!("PostgreSQL is not installed (/etc/postgresql: {e})"))?;
        for version in versions.flatten() {
            let v = version.file_name().to_string_lossy().into_owned();
            // A cluster that is already starting reports an error; the wait decides.
            let _ = run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &v, "main", "start"],
            );
        }
        wait_for(5432, "PostgreSQL")?;
    }
    if !port_open(3306) {
        eprintln!("MariaDB is not listening on 127.0.0.1:3306; starting it");
        run(
            "start-stop-daemon",
            &[
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ],
        )?;
        wait_for(3306, "MariaDB")?;
    }
    eprintln!("PostgreSQL (5432) and MariaDB (3306) are up");
    Ok(())
}

/// Where the review page's browser tests find Chromium and its driver
/// (Debian's `chromium` and `chromium-driver` packages).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Debian's Chromium and ChromeDriver when they are missing: the
/// review page's tests drive a real headless browser.
fn browser() -> Result {
    let have = |p: &str| Path::new(p).exists();
    if have(CHROMIUM) && have(CHROMEDRIVER) {
        eprintln!("Chromium and ChromeDriver are installed");
        return Ok(());
    }
    eprintln!("installing Debian's chromium and chromium-driver for the browser tests");
    let install = ["install", "-y", "chromium", "chromium-driver"];
    let env_args = ["DEBIAN_FRONTEND=noninteractive", "apt-get"];
    let mut first: Vec<&str> = env_args.to_vec();
    first.extend(install);
    if run("env", &first).is_err() {
        // A fresh machine may have no package lists yet.
        let mut update: Vec<&str> = env_args.to_vec();
        update.push("update");
        run("env", &update)?;
        run("env", &first)?;
    }
    if have(CHROMIUM) && have(CHROMEDRIVER) {
        Ok(())
    } else {
        Err(format!(
            "apt-get ran but {CHROMIUM} or {CHROMEDRIVER} is still missing"
        ))
    }
}

/// Runs all four cargo-deny checks offline. The build machines cannot reach
/// the advisory database's git host, so the snapshot kept beside the
/// repository (`../shared/advisory-db`, or `CRM_ADVISORY_DB`) is installed
/// where cargo-deny looks for its default database, as a one-commit git
/// repository (cargo-deny reads the HEAD commit's time).
fn deny() -> Result {
    let have_deny = Command::new(cargo())
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_deny {
        run(&cargo(), &["install", "--locked", "cargo-deny"])?;
    }
    let snapshot = env::var_os("CRM_ADVISORY_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/advisory-db"));
    if !snapshot.join("crates").is_dir() {
        return Err(format!(
            "no advisory database snapshot at {} (set CRM_ADVISORY_DB)",
            snapshot.display()
        ));
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let db = cargo_home.join("advisory-dbs/advisory-db-3157b0e258782691");
    if db.exists() {
        std::fs::remove_dir_all(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    }
    std::fs::create_dir_all(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    let src = format!("{}/.", snapshot.display());
    run("cp", &["-R", &src, &db.to_string_lossy()])?;
    let db_s = db.to_string_lossy().into_owned();
    for args in [
        vec!["init", "-q"],
        vec!["add", "-A"],
        vec![
            "-c",
            "user.name=advisory-db",
            "-c",
            "user.email=advisory-db@localhost",
            "commit",
            "-q",
            "-m",
            "advisory database snapshot",
        ],
    ] {
        let mut full = vec!["-C", db_s.as_str()];
        full.extend(args);
        run("git", &full)?;
    }
    run(&cargo(), &["fetch"])?;
    run(&cargo(), &["deny", "--offline", "check"])
}

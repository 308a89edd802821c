//! The project's routine commands, one entry point for people and CI.
//!
//! ```text
//! cargo xtask services   make sure PostgreSQL and MariaDB are up (start them if not)
//! cargo xtask browser    make sure headless Chromium and ChromeDriver are installed (apt-get)
//! cargo xtask test       services and the browser, then the whole test suite, then api-fuzz
//! cargo xtask api-fuzz   schemathesis against integration-service's own OpenAPI document
//! cargo xtask lint       cargo fmt --check and clippy -D warnings
//! cargo xtask deny       cargo deny, fully offline, against the vendored advisory database
//! cargo xtask ci         lint, test, api-fuzz, deny: what .ci/run runs
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let task = env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "services" => services(),
        "browser" => browser(),
        "test" => services()
            .and_then(|()| browser())
            .and_then(|()| test())
            .and_then(|()| api_fuzz()),
        "api-fuzz" => api_fuzz(),
        "lint" => lint(),
        "deny" => deny(),
        "ci" => ci(),
        _ => {
            eprintln!("usage: cargo xtask <services|browser|test|api-fuzz|lint|deny|ci>");
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
    api_fuzz()?;
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

/// The schemathesis release `api-fuzz` runs (OpenAPI 3.1 is supported
/// without a flag since 4.0). `scripts/api_fuzz/requirements.txt` pins it
/// and its dependencies.
const API_FUZZ_SCHEMATHESIS: &str = "4.32.5";

/// Test cases per operation and phase, unless `API_FUZZ_MAX_EXAMPLES`
/// says otherwise: the whole step takes about three minutes on 2 cores.
const API_FUZZ_MAX_EXAMPLES: &str = "40";

/// The hypothesis seed, unless `API_FUZZ_SEED` says otherwise (`random`
/// for a new one each run): a fixed seed keeps CI's run repeatable.
const API_FUZZ_SEED: &str = "1";

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"))
}

/// The venv under `target/api-fuzz/venv` with the pinned schemathesis,
/// made or brought up to the pin when needed; answers its Python.
fn api_fuzz_venv() -> Result<PathBuf> {
    let venv = target_dir().join("api-fuzz/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let python3 = env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
        run(&python3, &["-m", "venv", &venv.to_string_lossy()])?;
    }
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('schemathesis'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(API_FUZZ_SCHEMATHESIS) {
        eprintln!(
            "schemathesis {API_FUZZ_SCHEMATHESIS} is installed in {}",
            venv.display()
        );
    } else {
        let requirements = root().join("scripts/api_fuzz/requirements.txt");
        run(
            &python.to_string_lossy(),
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
                &requirements.to_string_lossy(),
            ],
        )?;
    }
    Ok(python)
}

/// A port nobody listens on now.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// Whether `GET /health` answers 200.
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// The service under test; stopped when dropped, whatever happened.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Property-based API test: builds `integration-service`, starts it with
/// its simulators on a free port (a fresh SQLite state in a temp dir, no
/// rate limit, no scheduled jobs), waits for `/health`, and runs
/// `scripts/api_fuzz/run.py` (schemathesis, every check, over every
/// operation of the service's own `/openapi.json`). Fails when
/// schemathesis reports a failure. See docs/api-fuzzing.md.
fn api_fuzz() -> Result {
    let python = api_fuzz_venv()?;
    run(&cargo(), &["build", "-p", "integration-service"])?;
    let binary = target_dir().join("debug/integration-service");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = env::temp_dir().join(format!("api-fuzz-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = free_port()?;
    // A test token of a throwaway service, not a secret.
    let token = format!("api-fuzz-{stamp:x}-admin");
    let config = dir.join("config.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\n\
         providers: simulators\n\
         state: {{url: \"sqlite://{db}?mode=rwc\"}}\n\
         tokens: [{{name: fuzz-admin, workspace: fuzz, role: admin, token: \"{token}\"}}]\n\
         jobs: {{enabled: false}}\n\
         http: {{rate_limit_per_hour: 0}}\n",
        db = dir.join("state.db").display(),
    );
    std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
    let log = dir.join("service.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    eprintln!("+ {} --config {}", binary.display(), config.display());
    let child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut service = Service { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if healthy(port) {
            break;
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!(
                "integration-service exited ({status}) before it answered /health:\n{}",
                service.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "integration-service did not answer /health on 127.0.0.1:{port} within 60 s:\n{}",
                service.log_tail()
            ));
        }
        sleep(Duration::from_millis(200));
    }
    eprintln!("integration-service is up on 127.0.0.1:{port}");
    let examples =
        env::var("API_FUZZ_MAX_EXAMPLES").unwrap_or_else(|_| API_FUZZ_MAX_EXAMPLES.into());
    let seed = env::var("API_FUZZ_SEED").unwrap_or_else(|_| API_FUZZ_SEED.into());
    let report = target_dir().join("api-fuzz/report");
    let url = format!("http://127.0.0.1:{port}");
    let script = root().join("scripts/api_fuzz/run.py");
    let mut args: Vec<String> = vec![
        script.to_string_lossy().into_owned(),
        "--url".into(),
        url,
        "--token".into(),
        token,
        "--max-examples".into(),
        examples,
        "--report-dir".into(),
        report.to_string_lossy().into_owned(),
        "--work-dir".into(),
        target_dir().join("api-fuzz").to_string_lossy().into_owned(),
    ];
    if seed != "random" {
        args.extend(["--seed".into(), seed]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let fuzz = run(&python.to_string_lossy(), &args);
    let elapsed = started.elapsed().as_secs();
    let crashed = service.child.try_wait().ok().flatten();
    drop(service);
    match (fuzz, crashed) {
        (_, Some(status)) => Err(format!(
            "integration-service exited ({status}) during the run; its log: {}",
            dir.join("service.log").display()
        )),
        (Err(e), None) => Err(format!(
            "schemathesis found failures ({e}); the service's log: {}, JUnit report in {}",
            dir.join("service.log").display(),
            report.display()
        )),
        (Ok(()), None) => {
            eprintln!("api-fuzz: no failure in {elapsed} s");
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        }
    }
}

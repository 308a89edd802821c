//! A small W3C WebDriver client over reqwest, driving Debian's
//! `chromedriver` and headless `chromium` (no extra dependency).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key W3C WebDriver uses for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` as a child process.
pub(crate) struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Driver {
    /// Starts `chromedriver` (`CHROMEDRIVER`, default `/usr/bin/chromedriver`).
    pub(crate) async fn start() -> Driver {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            Path::new(&bin).exists(),
            "{bin} is missing: install Debian's chromium and chromium-driver \
             (`cargo xtask test` does) or set CHROMEDRIVER"
        );
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url }
    }

    /// A new headless Chromium session.
    pub(crate) async fn session(&self) -> Browser {
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "crm-review-chromium-{}-{}",
            std::process::id(),
            free_port()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let r: Value = http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Browser {
            http,
            base: format!("{}/session/{id}", self.url),
        }
    }
}

/// One browser session.
pub(crate) struct Browser {
    http: reqwest::Client,
    base: String,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub(crate) struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = r["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Opens `url` and waits for the page to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// The current URL.
    pub(crate) async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Elements matching a CSS selector.
    pub(crate) async fn all(&self, css: &str) -> Vec<Element> {
        let v = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
            .collect()
    }

    /// The one element matching `css`.
    pub(crate) async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut found = self.all(css).await;
        while found.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            found = self.all(css).await;
        }
        if found.is_empty() {
            let source = self.get("/source").await;
            let source = source.as_str().unwrap_or_default();
            let tail: String = source.chars().take(2000).collect();
            panic!(
                "no element matches {css:?} on {}:\n{tail}",
                self.url().await
            );
        }
        found[0].clone()
    }

    /// Clicks an element that does not leave the page (a radio button).
    pub(crate) async fn click(&self, e: &Element) {
        self.post(&format!("/element/{}/click", e.0), json!({}))
            .await;
    }

    /// Clicks a link or submit button and waits until the next page has
    /// loaded: its URL differs from this one and the document is complete
    /// (a click may return before the navigation it starts).
    pub(crate) async fn click_to_next_page(&self, e: &Element) {
        let before = self.url().await;
        self.click(e).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = self.run("return document.readyState").await;
            if self.url().await != before && ready == "complete" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no new page after the click (still on {before})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clears a field, then types `text` into it.
    pub(crate) async fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/clear", e.0), json!({}))
            .await;
        self.post(&format!("/element/{}/value", e.0), json!({"text": text}))
            .await;
    }

    /// The text of an element.
    pub(crate) async fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of the whole page (read by a script, so no element
    /// reference can go stale).
    pub(crate) async fn page_text(&self) -> String {
        self.run("return document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs an async script (its last argument is the callback).
    pub(crate) async fn run_async(&self, script: &str) -> Value {
        self.post("/execute/async", json!({"script": script, "args": []}))
            .await
    }

    /// Runs a script in the page.
    pub(crate) async fn run(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Forgets every cookie (signs out).
    pub(crate) async fn clear_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await;
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let v = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Ends the session.
    pub(crate) async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

//! A running service against its simulators, with two workspaces' tokens,
//! and every log line captured.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crm_sim::SimHandle;
use integration_service::app::App;
use integration_service::config::ServiceConfig;
use integration_service::model::Provider;
use integration_service::sims;
use serde_json::{Value as Json, json};

/// The bearer tokens of the world: workspace `acme` has one per role,
/// workspace `globex` an admin.
pub const ACME_ADMIN: &str = "acme-admin-token-3f9a1c77e2";
pub const ACME_OPERATOR: &str = "acme-operator-token-8d2b4e61f0";
pub const ACME_VIEWER: &str = "acme-viewer-token-5c7e9a13b4";
pub const GLOBEX_ADMIN: &str = "globex-admin-token-0a6d8f24c9";

/// Everything logged by this test binary, at every level.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .try_init();
        buf
    })
    .clone()
}

/// The captured log text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An answer: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Json,
    pub text: String,
}

pub struct World {
    pub app: Arc<App>,
    pub base: String,
    pub dir: PathBuf,
    pub http: reqwest::Client,
    /// Every answer body received, for the secret scan.
    pub seen: Mutex<Vec<String>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "integration-service-{tag}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl World {
    pub async fn start(tag: &str) -> World {
        World::start_with(tag, "").await
    }

    /// A world whose config has `extra` YAML appended.
    pub async fn start_with(tag: &str, extra: &str) -> World {
        logs();
        let dir = temp_dir(tag);
        let yaml = format!(
            "providers: simulators\n\
             state: {{url: \"sqlite://{db}?mode=rwc\"}}\n\
             jobs: {{enabled: false}}\n\
             tokens:\n\
             \x20 - {{name: acme-admin, workspace: acme, role: admin, token: {ACME_ADMIN}}}\n\
             \x20 - {{name: acme-operator, workspace: acme, role: operator, token: {ACME_OPERATOR}}}\n\
             \x20 - {{name: acme-viewer, workspace: acme, role: viewer, token: {ACME_VIEWER}}}\n\
             \x20 - {{name: globex-admin, workspace: globex, role: admin, token: {GLOBEX_ADMIN}}}\n\
             {extra}",
            db = dir.join("state.db").display()
        );
        let config = ServiceConfig::from_yaml(&yaml).unwrap();
        let app = Arc::new(App::build(&config, &dir).await.unwrap());
        let server = crm_sync::serve::Server::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = Arc::clone(&app);
        tokio::spawn(async move {
            let _ = serving
                .serve(server, async {
                    let _ = stopped.await;
                })
                .await;
        });
        World {
            app,
            base,
            dir,
            http: reqwest::Client::new(),
            seen: Mutex::new(Vec::new()),
            _stop: stop,
        }
    }
}

impl World {
    pub fn sims(&self) -> &sims::Simulators {
        self.app.simulators.as_ref().unwrap()
    }

    pub fn sim(&self, p: Provider) -> &SimHandle {
        let s = self.sims();
        match p {
            Provider::Salesforce => &s.salesforce,
            Provider::Hubspot => &s.hubspot,
            Provider::Pipedrive => &s.pipedrive,
        }
    }

    /// Sends `method path` with `token` and an optional JSON body.
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<&Json>) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        self.seen.lock().unwrap().push(text.clone());
        let body = serde_json::from_str(&text).unwrap_or(Json::Null);
        Answer { status, body, text }
    }

    pub async fn post(&self, path: &str, token: &str, body: &Json) -> Answer {
        self.call("POST", path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, token, None).await
    }

    /// Creates an integration of `provider` in the token's workspace with
    /// the simulator's credentials; answers its id.
    pub async fn integration(&self, provider: Provider, token: &str, name: &str) -> String {
        let a = self
            .post(
                "/api/crm/integrations",
                token,
                &integration_body(provider, name),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// Every CRM contact (records of the contact object), read through
    /// the crate's own connector.
    pub async fn crm_contacts(&self, provider: Provider) -> Vec<crm_core::Record> {
        let crm = integration_service::crm::Crm::connect(
            provider,
            &credentials(provider)
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            Some(self.sim(provider).base_url()),
            None,
        )
        .unwrap();
        let (changes, _) = crm.contacts_since(None).await.unwrap();
        changes
            .into_iter()
            .filter_map(|c| match c {
                crm_core::Change::Upsert(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The bytes of every file of the state store.
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("state.db") && !name.ends_with(".key") {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
        out
    }
}

/// The simulators' credentials in the API's names.
pub fn credentials(provider: Provider) -> Json {
    match provider {
        Provider::Salesforce => json!({
            "clientId": sims::SF_CLIENT_ID,
            "clientSecret": sims::SF_CLIENT_SECRET,
            "accessToken": "00Dxx0000001gPL!seed-access-token",
            "refreshToken": sims::SF_REFRESH_TOKEN,
            "domain": "https://mycompany.salesforce.com"
        }),
        Provider::Hubspot => json!({"accessToken": sims::HUBSPOT_TOKEN}),
        Provider::Pipedrive => json!({"apiToken": sims::PIPEDRIVE_TOKEN, "domain": "mycompany"}),
    }
}

/// Seed 002's "Create CRM Integration" body, for `provider`.
pub fn integration_body(provider: Provider, name: &str) -> Json {
    json!({
        "provider": provider.as_str(),
        "name": name,
        "description": "Production CRM",
        "credentials": credentials(provider),
        "scopes": ["read_contacts", "write_leads"],
        "syncConfig": {
            "direction": "bidirectional",
            "syncInterval": 60,
            "autoSync": true,
            "contactFields": ["email", "firstName", "lastName", "company", "phone"],
            "leadFields": ["email", "source", "status"]
        }
    })
}

/// Requests after `from` that change data (not GET, not OAuth).
pub fn writes(sim: &SimHandle, from: usize) -> Vec<String> {
    sim.request_log()
        .entries()
        .into_iter()
        .skip(from)
        .filter(|e| {
            e.method != "GET"
                && !e.path.contains("oauth")
                && !e.path.contains("/search")
                && !e.path.ends_with("/batch/read")
        })
        .map(|e| format!("{} {}", e.method, e.path))
        .collect()
}

pub const PROVIDERS: [Provider; 3] = [Provider::Salesforce, Provider::Hubspot, Provider::Pipedrive];

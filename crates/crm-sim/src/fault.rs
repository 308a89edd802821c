//! [`FaultPlan`]: seeded, replayable failures injected into a simulator.
//!
//! A plan is a seed and a list of [`FaultRule`]s. Each rule matches requests
//! (method, path prefix), counts the ones it matches, and fires on chosen
//! ordinals (`nth`), periodically (`every`), or with a probability drawn from
//! its own ChaCha stream seeded from the plan's seed and the rule's position.
//! So the same plan fires on the same matching requests in every run: a
//! failing run is replayed by rerunning with its seed.
//!
//! Faults: 429 bursts with `Retry-After`, server errors (500/502/503/504),
//! slow responses, dropped connections (before or after the handler ran),
//! token expiry mid-run, per-record rejections in batch writes (consulted by
//! the provider's batch handler through [`RecordFaults`]), and duplicate
//! webhook deliveries.
//!
//! Plans load from JSON or YAML:
//!
//! ```
//! use crm_sim::FaultPlan;
//!
//! let plan = FaultPlan::from_yaml(r#"
//! seed: 42
//! rules:
//!   - fault: { kind: rate_limited, retry_after_s: 2, burst: 3 }
//!     when: { nth: [5] }
//!   - fault: { kind: server_error, status: 503 }
//!     when: { probability: 0.05 }
//!     match: { method: GET, path_prefix: /objects }
//!   - fault: { kind: drop, stage: after_handler }
//!     when: { every: 50 }
//!     max: 2
//! "#).unwrap();
//! assert_eq!(plan.rules.len(), 3);
//! ```

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A seeded list of fault rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seeds every probabilistic decision.
    #[serde(default)]
    pub seed: u64,
    /// The rules, evaluated in order for every request.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// One rule: which requests, when, and what fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The fault to inject.
    pub fault: Fault,
    /// When it fires among the matching requests.
    #[serde(default)]
    pub when: Trigger,
    /// Which requests the rule counts (all by default).
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// Fires at most this many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl FaultRule {
    /// A rule injecting `fault` on every request.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            fault,
            when: Trigger::Always,
            matcher: Match::default(),
            max: None,
        }
    }

    /// Sets the trigger.
    #[must_use]
    pub fn when(mut self, when: Trigger) -> Self {
        self.when = when;
        self
    }

    /// Only counts requests with this method.
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.matcher.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only counts requests whose path starts with `prefix`.
    #[must_use]
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.matcher.path_prefix = Some(prefix.to_owned());
        self
    }

    /// Fires at most `max` times.
    #[must_use]
    pub fn max(mut self, max: u64) -> Self {
        self.max = Some(max);
        self
    }
}

/// What goes wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Fault {
    /// Answer 429 (in the provider's form) with `Retry-After`, to this
    /// request and the next `burst - 1` matching ones.
    RateLimited {
        /// The `Retry-After` value in seconds.
        #[serde(default = "one")]
        retry_after_s: u64,
        /// How many consecutive matching requests are refused.
        #[serde(default = "one_u32")]
        burst: u32,
    },
    /// Answer this status (500, 502, 503, 504) in the provider's form.
    ServerError {
        /// The status.
        status: u16,
    },
    /// Wait before handling the request (past a client timeout, if long enough).
    Slow {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
    /// Close the connection without a response.
    Drop {
        /// Before or after the handler ran (after: a write may have landed).
        #[serde(default)]
        stage: DropStage,
    },
    /// Expire every issued access token, then handle the request (which then
    /// fails authentication, as a token expiring mid-run does).
    ExpireToken,
    /// Reject records of a batch write with a retryable error; the
    /// provider's batch handler asks [`RecordFaults::rejects`] per record.
    RejectRecords {
        /// The chance each record is rejected.
        probability: f64,
    },
    /// Deliver a webhook event more than once (counted over deliveries, not
    /// requests).
    DuplicateWebhook {
        /// Total deliveries of the event.
        #[serde(default = "two")]
        copies: u32,
    },
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn two() -> u32 {
    2
}

impl Fault {
    /// A stable name for logs (`rate_limited`, `server_error`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::RateLimited { .. } => "rate_limited",
            Fault::ServerError { .. } => "server_error",
            Fault::Slow { .. } => "slow",
            Fault::Drop { .. } => "drop",
            Fault::ExpireToken => "expire_token",
            Fault::RejectRecords { .. } => "reject_records",
            Fault::DuplicateWebhook { .. } => "duplicate_webhook",
        }
    }
}

/// When a dropped connection is dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropStage {
    /// Before the handler runs: nothing happened on the server.
    BeforeHandler,
    /// After the handler ran: the change landed but the client never hears.
    #[default]
    AfterHandler,
}

/// When a rule fires, counted over the requests it matches (from 1).
///
/// Written `always`, `{nth: [3, 7]}`, `{every: 10}` or `{probability: 0.05}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TriggerRepr", into = "TriggerRepr")]
pub enum Trigger {
    /// Every matching request.
    #[default]
    Always,
    /// On these ordinals.
    Nth(Vec<u64>),
    /// On every n-th (n, 2n, 3n, ...).
    Every(u64),
    /// With this probability each.
    Probability(f64),
}

/// The serde shape of [`Trigger`]: a word or a one-key map, the same in
/// JSON and YAML (serde_yaml would otherwise want YAML tags for enums).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TriggerRepr {
    Word(String),
    Map(TriggerMap),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerMap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nth: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
}

impl TryFrom<TriggerRepr> for Trigger {
    type Error = String;

    fn try_from(r: TriggerRepr) -> Result<Self, String> {
        match r {
            TriggerRepr::Word(w) if w == "always" => Ok(Trigger::Always),
            TriggerRepr::Word(w) => Err(format!(
                "unknown trigger {w}; expected always, nth, every or probability"
            )),
            TriggerRepr::Map(TriggerMap {
                nth: Some(n),
                every: None,
                probability: None,
            }) => Ok(Trigger::Nth(n)),
            TriggerRepr::Map(TriggerMap {
                nth: None,
                every: Some(e),
                probability: None,
            }) => Ok(Trigger::Every(e)),
            TriggerRepr::Map(TriggerMap {
                nth: None,
                every: None,
                probability: Some(p),
            }) => Ok(Trigger::Probability(p)),
            TriggerRepr::Map(_) => {
                Err("a trigger has exactly one of nth, every, probability".into())
            }
        }
    }
}

impl From<Trigger> for TriggerRepr {
    fn from(t: Trigger) -> Self {
        match t {
            Trigger::Always => TriggerRepr::Word("always".into()),
            Trigger::Nth(n) => TriggerRepr::Map(TriggerMap {
                nth: Some(n),
                ..TriggerMap::default()
            }),
            Trigger::Every(e) => TriggerRepr::Map(TriggerMap {
                every: Some(e),
                ..TriggerMap::default()
            }),
            Trigger::Probability(p) => TriggerRepr::Map(TriggerMap {
                probability: Some(p),
                ..TriggerMap::default()
            }),
        }
    }
}

/// Which requests a rule counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The method, upper-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl Match {
    fn admits(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// Why a fault plan could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultPlanError {
    /// The file could not be read.
    #[error("reading fault plan {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not a valid plan.
    #[error("parsing fault plan: {0}")]
    Parse(String),
    /// A rule is out of range.
    #[error("invalid fault plan: {0}")]
    Invalid(String),
}

impl FaultPlan {
    /// An empty plan with a seed.
    pub fn new(seed: u64) -> Self {
        FaultPlan {
            seed,
            rules: Vec::new(),
        }
    }

    /// Adds a rule.
    #[must_use]
    pub fn rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Parses YAML (which includes JSON) and validates.
    ///
    /// # Errors
    /// [`FaultPlanError::Parse`] or [`FaultPlanError::Invalid`].
    pub fn from_yaml(text: &str) -> Result<Self, FaultPlanError> {
        let plan: FaultPlan =
            serde_yaml::from_str(text).map_err(|e| FaultPlanError::Parse(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Parses JSON and validates.
    ///
    /// # Errors
    /// [`FaultPlanError::Parse`] or [`FaultPlanError::Invalid`].
    pub fn from_json(text: &str) -> Result<Self, FaultPlanError> {
        let plan: FaultPlan =
            serde_json::from_str(text).map_err(|e| FaultPlanError::Parse(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Reads a `.json`, `.yaml` or `.yml` file.
    ///
    /// # Errors
    /// [`FaultPlanError::Io`], [`FaultPlanError::Parse`] or [`FaultPlanError::Invalid`].
    pub fn from_file(path: &Path) -> Result<Self, FaultPlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| FaultPlanError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            FaultPlan::from_json(&text)
        } else {
            FaultPlan::from_yaml(&text)
        }
    }

    /// Checks ranges: probabilities in 0..=1, statuses 500..=599, `every` > 0,
    /// bursts and copies > 0.
    ///
    /// # Errors
    /// [`FaultPlanError::Invalid`] naming the first bad rule.
    pub fn validate(&self) -> Result<(), FaultPlanError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let bad = |why: &str| Err(FaultPlanError::Invalid(format!("rule {i}: {why}")));
            match &rule.when {
                Trigger::Probability(p) if !(0.0..=1.0).contains(p) => {
                    return bad("probability must be within 0..=1");
                }
                Trigger::Every(0) => return bad("every must be at least 1"),
                _ => {}
            }
            match &rule.fault {
                Fault::ServerError { status } if !(500..=599).contains(status) => {
                    return bad("server_error status must be 5xx");
                }
                Fault::RateLimited { burst: 0, .. } => return bad("burst must be at least 1"),
                Fault::RejectRecords { probability } if !(0.0..=1.0).contains(probability) => {
                    return bad("reject probability must be within 0..=1");
                }
                Fault::DuplicateWebhook { copies: 0 } => return bad("copies must be at least 1"),
                _ => {}
            }
        }
        Ok(())
    }

    /// A random plan of recoverable faults derived from `seed`: 429 bursts,
    /// 500/503s, slow responses of up to `max_delay`, drops after the
    /// handler on `POST`/`PUT`/`PATCH` writes and before it on reads, token
    /// expiry, and per-record rejections. Every fault is one a correct
    /// client survives by retrying, so a run under any chaos plan must end
    /// in the same state as a clean run.
    pub fn chaos(seed: u64, max_delay: Duration) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc4a0_5eed);
        let mut plan = FaultPlan::new(seed);
        let p = |rng: &mut ChaCha8Rng, hi: f64| rng.random_range(0.01..hi);
        plan.rules.push(
            FaultRule::new(Fault::RateLimited {
                retry_after_s: 1,
                burst: rng.random_range(1..=2),
            })
            .when(Trigger::Probability(p(&mut rng, 0.06)))
            .max(3),
        );
        plan.rules.push(
            FaultRule::new(Fault::ServerError {
                status: if rng.random_bool(0.5) { 500 } else { 503 },
            })
            .when(Trigger::Probability(p(&mut rng, 0.1))),
        );
        if !max_delay.is_zero() {
            let ms = u64::try_from(max_delay.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            plan.rules.push(
                FaultRule::new(Fault::Slow {
                    delay_ms: rng.random_range(1..=ms),
                })
                .when(Trigger::Probability(p(&mut rng, 0.05)))
                .max(2),
            );
        }
        plan.rules.push(
            FaultRule::new(Fault::Drop {
                stage: DropStage::AfterHandler,
            })
            .method("POST")
            .when(Trigger::Probability(p(&mut rng, 0.1)))
            .max(2),
        );
        plan.rules.push(
            FaultRule::new(Fault::Drop {
                stage: DropStage::BeforeHandler,
            })
            .method("GET")
            .when(Trigger::Probability(p(&mut rng, 0.05)))
            .max(2),
        );
        plan.rules.push(
            FaultRule::new(Fault::ExpireToken)
                .when(Trigger::Nth(vec![rng.random_range(2..20)]))
                .max(1),
        );
        plan.rules.push(
            FaultRule::new(Fault::RejectRecords {
                probability: p(&mut rng, 0.2),
            })
            .method("POST")
            .when(Trigger::Probability(p(&mut rng, 0.3))),
        );
        plan
    }
}

/// What the fault plan decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Decision {
    /// A fault that replaces the response (429, 5xx, drop), if any.
    pub terminal: Option<Fault>,
    /// Delay before handling.
    pub delay: Duration,
    /// Expire all tokens before handling.
    pub expire_tokens: bool,
    /// Per-record rejections for the handler.
    pub records: Option<RecordFaults>,
    /// Names of every fault applied, for the request log.
    pub applied: Vec<&'static str>,
}

/// Per-record rejections a batch handler consults: `rejects(i)` is the
/// plan's deterministic choice for the `i`-th record of this request.
///
/// A handler receives it as an `Option<axum::Extension<RecordFaults>>`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordFaults {
    seed: u64,
    probability: f64,
}

impl RecordFaults {
    /// Rejections of each record with `probability`, drawn from `seed`.
    pub fn new(seed: u64, probability: f64) -> Self {
        RecordFaults { seed, probability }
    }

    /// Whether record `index` of the batch is to be rejected.
    pub fn rejects(&self, index: usize) -> bool {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        rng.random_bool(self.probability.clamp(0.0, 1.0))
    }
}

struct RuleState {
    seen: u64,
    fired: u64,
    burst_left: u32,
    rng: ChaCha8Rng,
}

struct Inner {
    plan: FaultPlan,
    states: Vec<RuleState>,
    webhook_deliveries: u64,
}

/// The live fault plan of a simulator; clones share it. Starts empty.
#[derive(Clone)]
pub struct FaultInjector {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjector")
            .field("plan", &self.lock().plan)
            .finish()
    }
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector::new(FaultPlan::default())
    }
}

fn states_for(plan: &FaultPlan) -> Vec<RuleState> {
    plan.rules
        .iter()
        .enumerate()
        .map(|(i, _)| RuleState {
            seen: 0,
            fired: 0,
            burst_left: 0,
            rng: ChaCha8Rng::seed_from_u64(
                plan.seed
                    .wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            ),
        })
        .collect()
}

impl FaultInjector {
    /// An injector running `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        let states = states_for(&plan);
        FaultInjector {
            inner: Arc::new(Mutex::new(Inner {
                plan,
                states,
                webhook_deliveries: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters are updated in place; a poisoned lock still holds usable state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the plan and restarts its counters.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut inner = self.lock();
        inner.states = states_for(&plan);
        inner.plan = plan;
        inner.webhook_deliveries = 0;
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.set_plan(FaultPlan::default());
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.lock().plan.clone()
    }

    /// How many times each rule fired, in rule order.
    pub fn fired(&self) -> Vec<u64> {
        self.lock().states.iter().map(|s| s.fired).collect()
    }

    /// Decides the faults for one request. Every matching rule advances its
    /// counters (and draws from its stream) whether or not it fires, so
    /// decisions depend only on the seed and the order of matching requests.
    pub fn decide(&self, method: &str, path: &str) -> Decision {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut d = Decision::default();
        for (i, (rule, st)) in inner
            .plan
            .rules
            .iter()
            .zip(inner.states.iter_mut())
            .enumerate()
        {
            if matches!(rule.fault, Fault::DuplicateWebhook { .. })
                || !rule.matcher.admits(method, path)
            {
                continue;
            }
            st.seen += 1;
            // An ongoing burst keeps refusing without a new trigger.
            if st.burst_left > 0 {
                st.burst_left -= 1;
                if d.terminal.is_none() {
                    d.terminal = Some(rule.fault.clone());
                    d.applied.push(rule.fault.name());
                }
                continue;
            }
            let triggered = match &rule.when {
                Trigger::Always => true,
                Trigger::Nth(list) => list.contains(&st.seen),
                Trigger::Every(n) => *n > 0 && st.seen.is_multiple_of(*n),
                Trigger::Probability(p) => st.rng.random_bool(p.clamp(0.0, 1.0)),
            };
            if !triggered || rule.max.is_some_and(|m| st.fired >= m) {
                continue;
            }
            match &rule.fault {
                Fault::RateLimited { burst, .. } => {
                    if d.terminal.is_some() {
                        continue;
                    }
                    st.burst_left = burst.saturating_sub(1);
                    d.terminal = Some(rule.fault.clone());
                }
                Fault::ServerError { .. } | Fault::Drop { .. } => {
                    if d.terminal.is_some() {
                        continue;
                    }
                    d.terminal = Some(rule.fault.clone());
                }
                Fault::Slow { delay_ms } => {
                    d.delay += Duration::from_millis(*delay_ms);
                }
                Fault::ExpireToken => d.expire_tokens = true,
                Fault::RejectRecords { probability } => {
                    let seed = inner.plan.seed ^ ((i as u64) << 48) ^ st.seen;
                    d.records = Some(RecordFaults::new(seed, *probability));
                }
                Fault::DuplicateWebhook { .. } => continue,
            }
            st.fired += 1;
            d.applied.push(rule.fault.name());
        }
        d
    }

    /// How many times to deliver the next webhook event (1 unless a
    /// `duplicate_webhook` rule fires).
    pub fn webhook_copies(&self) -> u32 {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.webhook_deliveries += 1;
        let mut copies = 1;
        for (rule, st) in inner.plan.rules.iter().zip(inner.states.iter_mut()) {
            let Fault::DuplicateWebhook { copies: n } = rule.fault else {
                continue;
            };
            st.seen += 1;
            let triggered = match &rule.when {
                Trigger::Always => true,
                Trigger::Nth(list) => list.contains(&st.seen),
                Trigger::Every(k) => *k > 0 && st.seen.is_multiple_of(*k),
                Trigger::Probability(p) => st.rng.random_bool(p.clamp(0.0, 1.0)),
            };
            if triggered && rule.max.is_none_or(|m| st.fired < m) {
                st.fired += 1;
                copies = copies.max(n);
            }
        }
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_replay_from_the_seed() {
        let plan = FaultPlan::chaos(9, Duration::from_millis(50));
        let run = || {
            let inj = FaultInjector::new(plan.clone());
            (0..300)
                .map(|i| {
                    let m = if i % 3 == 0 { "POST" } else { "GET" };
                    inj.decide(m, "/objects/c").applied
                })
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(
            a.iter().any(|x| !x.is_empty()),
            "chaos plan 9 injected nothing"
        );
        let other = FaultInjector::new(FaultPlan::chaos(10, Duration::from_millis(50)));
        let b: Vec<_> = (0..300)
            .map(|i| {
                other
                    .decide(if i % 3 == 0 { "POST" } else { "GET" }, "/objects/c")
                    .applied
            })
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn bursts_nth_every_and_max() {
        let plan = FaultPlan::new(1)
            .rule(
                FaultRule::new(Fault::RateLimited {
                    retry_after_s: 2,
                    burst: 3,
                })
                .when(Trigger::Nth(vec![2])),
            )
            .rule(
                FaultRule::new(Fault::ServerError { status: 503 })
                    .when(Trigger::Every(4))
                    .path_prefix("/x")
                    .max(1),
            );
        let inj = FaultInjector::new(plan);
        let got: Vec<Option<&'static str>> = (0..10)
            .map(|_| inj.decide("GET", "/x").terminal.map(|f| f.name()))
            .collect();
        // Requests 2..=4 are the burst (the 503 due on 4 yields to it), 8 is the 503.
        assert_eq!(
            got,
            [
                None,
                Some("rate_limited"),
                Some("rate_limited"),
                Some("rate_limited"),
                None,
                None,
                None,
                Some("server_error"),
                None,
                None
            ]
        );
        assert_eq!(inj.fired(), vec![1, 1]);
    }

    #[test]
    fn record_faults_are_deterministic() {
        let r = RecordFaults::new(5, 0.5);
        let a: Vec<bool> = (0..64).map(|i| r.rejects(i)).collect();
        let b: Vec<bool> = (0..64).map(|i| r.rejects(i)).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
    }

    #[test]
    fn plans_parse_and_validate() {
        let json =
            r#"{"seed": 3, "rules": [{"fault": {"kind": "expire_token"}, "when": {"nth": [10]}}]}"#;
        let plan = FaultPlan::from_json(json).unwrap_or_default();
        assert_eq!(plan.rules.len(), 1);
        assert!(
            FaultPlan::from_yaml("rules: [{fault: {kind: server_error, status: 404}}]").is_err()
        );
        assert!(
            FaultPlan::from_yaml(
                "rules: [{fault: {kind: slow, delay_ms: 5}, when: {probability: 2.0}}]"
            )
            .is_err()
        );
        assert!(FaultPlan::from_yaml("rules: [{fault: {kind: nope}}]").is_err());
        assert!(
            FaultPlan::from_yaml(
                "rules: [{fault: {kind: expire_token}, when: {nth: [1], every: 2}}]"
            )
            .is_err()
        );
        assert!(
            FaultPlan::from_yaml("rules: [{fault: {kind: expire_token}, when: sometimes}]")
                .is_err()
        );
        let yaml = FaultPlan::from_yaml(
            "rules: [{fault: {kind: expire_token}, when: always}, {fault: {kind: expire_token}, when: {every: 3}}]",
        );
        assert_eq!(
            yaml.map(|p| p.rules.into_iter().map(|r| r.when).collect::<Vec<_>>())
                .ok(),
            Some(vec![Trigger::Always, Trigger::Every(3)])
        );
        let chaos = FaultPlan::chaos(1, Duration::from_millis(10));
        let round = FaultPlan::from_yaml(&serde_yaml::to_string(&chaos).unwrap_or_default());
        assert_eq!(round.ok(), Some(chaos));
    }

    #[test]
    fn webhook_duplicates() {
        let inj = FaultInjector::new(FaultPlan::new(0).rule(
            FaultRule::new(Fault::DuplicateWebhook { copies: 2 }).when(Trigger::Nth(vec![2])),
        ));
        assert_eq!(inj.webhook_copies(), 1);
        assert_eq!(inj.webhook_copies(), 2);
        assert_eq!(inj.webhook_copies(), 1);
        // Webhook rules never touch requests.
        assert!(inj.decide("GET", "/").terminal.is_none());
    }
}

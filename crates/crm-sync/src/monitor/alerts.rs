//! Seed 001's alert rules: `<metric> <op> <number>` conditions, evaluated
//! per subject (a connection and direction, a connection, a provider),
//! firing once when they become true and resolving once when they clear.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::health::HealthRow;
use super::metrics::{ProviderMetrics, SyncMetrics};

/// What a condition measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Per connection and direction: minutes since the last completed run.
    LagMinutes,
    /// Per connection: records failed over records attempted in the window.
    FailureRate,
    /// Per connection: records written over records attempted in the window.
    SuccessRate,
    /// Per connection: failed runs over finished runs in the window.
    RunFailureRate,
    /// Per connection: records written per hour over the window.
    RecordsPerHour,
    /// Per provider: API calls that returned an error over calls.
    ApiErrorRate,
    /// Per provider: mean seconds of one API attempt.
    LatencySeconds,
    /// Per provider: requests in the quota period over the quota.
    QuotaUsedRatio,
}

impl Metric {
    /// Every metric, in the order of [`Metric::as_str`]'s table.
    pub const ALL: [Metric; 8] = [
        Metric::LagMinutes,
        Metric::FailureRate,
        Metric::SuccessRate,
        Metric::RunFailureRate,
        Metric::RecordsPerHour,
        Metric::ApiErrorRate,
        Metric::LatencySeconds,
        Metric::QuotaUsedRatio,
    ];

    /// The name conditions use.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LagMinutes => "lag_minutes",
            Metric::FailureRate => "failure_rate",
            Metric::SuccessRate => "success_rate",
            Metric::RunFailureRate => "run_failure_rate",
            Metric::RecordsPerHour => "records_per_hour",
            Metric::ApiErrorRate => "api_error_rate",
            Metric::LatencySeconds => "latency_seconds",
            Metric::QuotaUsedRatio => "quota_used_ratio",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    /// `lhs op rhs`.
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            Op::Gt => lhs > rhs,
            Op::Ge => lhs >= rhs,
            Op::Lt => lhs < rhs,
            Op::Le => lhs <= rhs,
            Op::Eq => lhs == rhs,
            Op::Ne => lhs != rhs,
        }
    }
}

/// A condition `<metric> <op> <number>`, e.g. `lag_minutes > 60`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    /// What is measured.
    pub metric: Metric,
    /// How it is compared.
    pub op: Op,
    /// With what.
    pub threshold: f64,
}

/// A condition that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("condition {text:?}: {reason}")]
pub struct ConditionError {
    /// The text.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for Condition {
    type Err = ConditionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ConditionError {
            text: text.to_owned(),
            reason,
        };
        let t = text.trim();
        let name_end = t
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        let (name, rest) = t.split_at(name_end);
        if name.is_empty() {
            return Err(err("expected `<metric> <op> <number>`".to_owned()));
        }
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                err(format!(
                    "unknown metric `{name}` (known: {})",
                    known.join(", ")
                ))
            })?;
        let rest = rest.trim_start();
        let (op, rest) = [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(s, op)| rest.strip_prefix(s).map(|r| (op, r)))
        .ok_or_else(|| err("expected one of > >= < <= == != after the metric".to_owned()))?;
        let number = rest.trim();
        let threshold: f64 = number
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| err(format!("`{number}` is not a finite number")))?;
        Ok(Condition {
            metric,
            op,
            threshold,
        })
    }
}

impl TryFrom<String> for Condition {
    type Error = ConditionError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> Self {
        c.to_string()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.metric, self.op.as_str(), self.threshold)
    }
}

impl Condition {
    /// Whether `value` meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        self.op.holds(value, self.threshold)
    }
}

/// One rule of the top-level `alerts:` list, in seed 001's shape.
///
/// ```yaml
/// alerts:
///   - name: crm_sync_delay
///     condition: lag_minutes > 60
///     severity: high
///     notification:
///       - email: data-team@company.com
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The alert's name.
    pub name: String,
    /// When it fires.
    pub condition: Condition,
    /// Passed on in the notification (`high`, `critical`, ...).
    #[serde(default)]
    pub severity: Option<String>,
    /// Passed on in the notification, as written (seed 001: `email`,
    /// `slack`, `pagerduty` entries), for the receiver to route by.
    #[serde(default)]
    pub notification: Vec<serde_json::Value>,
}

/// Seed 001's two rules, for a job without an `alerts:` list.
pub fn seed_001_rules() -> Vec<AlertRule> {
    vec![
        AlertRule {
            name: "crm_sync_delay".to_owned(),
            condition: Condition {
                metric: Metric::LagMinutes,
                op: Op::Gt,
                threshold: 60.0,
            },
            severity: Some("high".to_owned()),
            notification: Vec::new(),
        },
        AlertRule {
            name: "sync_failure_rate".to_owned(),
            condition: Condition {
                metric: Metric::FailureRate,
                op: Op::Gt,
                threshold: 0.05,
            },
            severity: Some("critical".to_owned()),
            notification: Vec::new(),
        },
    ]
}

/// A subject's measured value: labels naming it and the value, `None`
/// when there is nothing to measure (no records in the window).
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// `connection_id`, `provider`, `connection`, `direction` as they apply.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: Option<f64>,
}

/// The observations of `metric`.
pub fn observations(
    metric: Metric,
    health: &[HealthRow],
    sync: &[SyncMetrics],
    providers: &[ProviderMetrics],
) -> Vec<Observation> {
    let conn_labels = |id: &str, provider: &str, name: &str| {
        BTreeMap::from([
            ("connection_id".to_owned(), id.to_owned()),
            ("provider".to_owned(), provider.to_owned()),
            ("connection".to_owned(), name.to_owned()),
        ])
    };
    let by_conn = |get: fn(&SyncMetrics) -> Option<f64>| {
        sync.iter()
            .map(|m| Observation {
                labels: conn_labels(m.connection_id.as_str(), &m.provider, &m.connection),
                value: get(m),
            })
            .collect()
    };
    let by_provider = |get: fn(&ProviderMetrics) -> Option<f64>| {
        providers
            .iter()
            .map(|p| Observation {
                labels: BTreeMap::from([("provider".to_owned(), p.provider.clone())]),
                value: get(p),
            })
            .collect()
    };
    match metric {
        Metric::LagMinutes => health
            .iter()
            .map(|h| {
                let mut labels = conn_labels(h.connection_id.as_str(), &h.provider, &h.connection);
                labels.insert("direction".to_owned(), h.direction.as_str().to_owned());
                labels.insert("health_status".to_owned(), h.status.as_str().to_owned());
                Observation {
                    labels,
                    value: Some(h.lag_minutes as f64),
                }
            })
            .collect(),
        Metric::FailureRate => by_conn(|m| m.failure_rate),
        Metric::SuccessRate => by_conn(|m| m.success_rate),
        Metric::RunFailureRate => by_conn(|m| m.run_failure_rate),
        Metric::RecordsPerHour => by_conn(|m| Some(m.records_per_hour)),
        Metric::ApiErrorRate => by_provider(|p| p.api_error_rate),
        Metric::LatencySeconds => by_provider(|p| p.latency_seconds),
        Metric::QuotaUsedRatio => by_provider(|p| p.quota_used_ratio),
    }
}

/// Whether a notification opens or closes an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition became true.
    Firing,
    /// The condition is no longer true.
    Resolved,
}

/// The JSON body POSTed to the alert webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AlertNotification {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The rule's name.
    pub alert: String,
    /// The rule's severity.
    pub severity: Option<String>,
    /// The rule's condition as text.
    pub condition: String,
    /// The metric.
    pub metric: String,
    /// The value that fired it, or the value it cleared at.
    pub value: Option<f64>,
    /// The condition's number.
    pub threshold: f64,
    /// The subject (connection, direction, provider).
    pub labels: BTreeMap<String, String>,
    /// When the condition became true.
    pub started_at: DateTime<Utc>,
    /// When it cleared (`resolved` only).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The rule's `notification` entries.
    pub notification: Vec<serde_json::Value>,
    /// Stable for one alert and subject: pairs a resolution with its firing.
    pub fingerprint: String,
}

#[derive(Clone, Debug)]
struct Firing {
    rule: String,
    started_at: DateTime<Utc>,
}

/// Which rules fire for which subjects: the memory that makes an alert
/// fire once and resolve once.
#[derive(Debug, Default)]
pub struct AlertBook {
    firing: HashMap<String, Firing>,
}

fn fingerprint(rule: &str, labels: &BTreeMap<String, String>) -> String {
    let mut key = rule.to_owned();
    for (k, v) in labels {
        if k == "health_status" {
            continue;
        }
        key.push('\u{1f}');
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    crate::serve::hex(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()))
        .chars()
        .take(32)
        .collect()
}

impl AlertBook {
    /// An empty book.
    pub fn new() -> Self {
        AlertBook::default()
    }

    /// Evaluates `rule` over `observations`: a notification for every
    /// subject whose condition became true, and for every one whose
    /// condition cleared. A subject without a value keeps its state.
    pub fn evaluate(
        &mut self,
        rule: &AlertRule,
        observations: &[Observation],
        now: DateTime<Utc>,
    ) -> Vec<AlertNotification> {
        let mut out = Vec::new();
        for obs in observations {
            let Some(value) = obs.value else { continue };
            let fp = fingerprint(&rule.name, &obs.labels);
            let holds = rule.condition.holds(value);
            let note = |status, started_at, resolved_at| AlertNotification {
                status,
                alert: rule.name.clone(),
                severity: rule.severity.clone(),
                condition: rule.condition.to_string(),
                metric: rule.condition.metric.as_str().to_owned(),
                value: Some(value),
                threshold: rule.condition.threshold,
                labels: obs.labels.clone(),
                started_at,
                resolved_at,
                notification: rule.notification.clone(),
                fingerprint: fp.clone(),
            };
            match (holds, self.firing.get(&fp)) {
                (true, None) => {
                    out.push(note(AlertStatus::Firing, now, None));
                    self.firing.insert(
                        fp.clone(),
                        Firing {
                            rule: rule.name.clone(),
                            started_at: now,
                        },
                    );
                }
                (false, Some(f)) => {
                    out.push(note(AlertStatus::Resolved, f.started_at, Some(now)));
                    self.firing.remove(&fp);
                }
                _ => {}
            }
        }
        out
    }

    /// How many subjects are firing.
    pub fn firing_count(&self) -> usize {
        self.firing.len()
    }

    /// How many subjects are firing, per rule name.
    pub fn firing_by_rule(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for f in self.firing.values() {
            *out.entry(f.rule.clone()).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        let c: Condition = "lag_minutes > 60".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.metric, Metric::LagMinutes);
        assert_eq!(c.op, Op::Gt);
        assert_eq!(c.threshold, 60.0);
        assert!(c.holds(61.0) && !c.holds(60.0));
        let c: Condition = "failure_rate>=0.05"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.op, c.threshold), (Op::Ge, 0.05));
        assert_eq!(c.to_string(), "failure_rate >= 0.05");
        for bad in [
            "",
            "> 5",
            "lag_minutes",
            "lag_minutes ~ 5",
            "lag_minutes > x",
            "lag_minutes > inf",
            "nope > 1",
            "lag_minutes > 1 2",
        ] {
            assert!(bad.parse::<Condition>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seed_001_yaml_parses() {
        let rules: Vec<AlertRule> = serde_yaml::from_str(
            "- name: crm_sync_delay\n  condition: lag_minutes > 60\n  severity: high\n  notification:\n    - email: data-team@company.com\n    - slack: #data-alerts\n\
             - name: sync_failure_rate\n  condition: failure_rate > 0.05\n  severity: critical\n  notification:\n    - pagerduty: data-oncall\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].condition, seed_001_rules()[0].condition);
        assert_eq!(rules[1].condition, seed_001_rules()[1].condition);
        assert_eq!(rules[0].notification.len(), 2);
        let bad = serde_yaml::from_str::<Vec<AlertRule>>("- name: x\n  condition: lag > 1\n");
        assert!(bad.is_err());
    }

    #[test]
    fn fires_once_and_resolves_once() {
        let rule = &seed_001_rules()[0];
        let mut book = AlertBook::new();
        let obs = |v| {
            vec![Observation {
                labels: BTreeMap::from([("connection".to_owned(), "c".to_owned())]),
                value: v,
            }]
        };
        let t = Utc::now();
        assert!(book.evaluate(rule, &obs(Some(10.0)), t).is_empty());
        let fired = book.evaluate(rule, &obs(Some(61.0)), t);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert!(book.evaluate(rule, &obs(Some(90.0)), t).is_empty());
        assert!(book.evaluate(rule, &obs(None), t).is_empty());
        let resolved = book.evaluate(rule, &obs(Some(5.0)), t);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].fingerprint, fired[0].fingerprint);
        assert!(book.evaluate(rule, &obs(Some(5.0)), t).is_empty());
        assert_eq!(book.firing_count(), 0);
    }
}

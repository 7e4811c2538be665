//! `chronicle ask`: questions in plain English mapped, deterministically, onto the
//! analyses of [`crate::analysis`].
//!
//! The grammar is small and documented (README, "Asking questions"):
//! - **What**: the first intent whose words appear wins, in this order — *functions*
//!   ("which/what/list functions"), *drift* ("changed", "drift", "differ", "compare", "vs",
//!   "regress", "between builds"), *errors* ("error", "fail", "crash", "panic", "exception",
//!   "unwound", "wrong"), *performance* ("slow", "fast", "latency", "performance", "how long",
//!   "duration", "p50"/"p99", "percentile"), *frequency* ("how often", "how many", "frequency",
//!   "volume", "called", "count", "per hour/day"), *input distribution* ("distribution",
//!   "typical", "range", "what values", "inputs", "arguments", "parameters"), *examples*
//!   ("example", "sample", "show"). Nothing recognised: `help`.
//! - **Which function**: any word that names a recorded function (full name, last path
//!   segment, with or without `()`), else the closest name within a small edit distance.
//! - **When** (UTC): "today", "yesterday", "this/last week", "this/last month", "last/past N
//!   minutes|hours|days|weeks" ("last hour", "last 24 hours"), "since Monday" (any weekday),
//!   "since 2026-11-01".
//! - **Compared with what** (drift): "between builds A and B" / "build A vs build B" (build
//!   ID prefixes); otherwise the period asked about against the one just before it (default:
//!   the last 7 days against the 7 before).
//! - **How many**: "top 5", "10 slowest", "3 examples".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

use crate::analysis::{self, Period, Scope};
use crate::storage::{Storage, StorageError, match_function};
use crate::testgen::BehaviorAgent;

/// What a question asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    ErrorAnalysis,
    Performance,
    Drift,
    Frequency,
    InputDistribution,
    Examples,
    Functions,
    Dependencies,
    Help,
}

impl Intent {
    /// The answer's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::ErrorAnalysis => "error_analysis",
            Intent::Performance => "performance",
            Intent::Drift => "drift",
            Intent::Frequency => "frequency",
            Intent::InputDistribution => "input_distribution",
            Intent::Examples => "examples",
            Intent::Functions => "functions",
            Intent::Dependencies => "dependencies",
            Intent::Help => "help",
        }
    }
}

/// A time window: `[since, until)`, either end open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

/// The structured reading of a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpretation {
    pub intent: Intent,
    /// The recorded function it is about, when it names one.
    pub function: Option<String>,
    /// The time window, when it gives one.
    pub window: Window,
    /// Drift: two build ID prefixes to compare, older first.
    pub builds: Option<(String, String)>,
    /// "top 5", "10 slowest".
    pub count: Option<usize>,
}

const DAY: u64 = 86_400;

const INTENTS: &[(Intent, &[&str])] = &[
    (
        Intent::Functions,
        &[
            "which functions",
            "what functions",
            "list functions",
            "list the functions",
            "all functions",
            "functions are",
            "functions were",
        ],
    ),
    (
        Intent::Drift,
        &[
            "changed",
            "change",
            "drift",
            "differ",
            "different",
            "compare",
            "compared",
            " vs",
            "versus",
            "regress",
            "between builds",
            "between build",
        ],
    ),
    (
        Intent::ErrorAnalysis,
        &[
            "error",
            "fail",
            "crash",
            "panic",
            "exception",
            "unwound",
            "wrong",
            "broke",
        ],
    ),
    (
        Intent::Dependencies,
        &[
            "depend",
            " call?",
            "what it calls",
            "calls out",
            "talk to",
            "talks to",
            "downstream",
            "external",
            " sql",
            "database",
            " db ",
            "http",
            "file",
            "network",
            "connect",
        ],
    ),
    (
        Intent::Performance,
        &[
            "slow",
            "fast",
            "latency",
            "performance",
            "how long",
            "duration",
            "p50",
            "p90",
            "p99",
            "percentile",
            "takes",
            "take to",
        ],
    ),
    (
        Intent::Frequency,
        &[
            "how often",
            "how many",
            "frequency",
            "volume",
            "called",
            "count",
            "per hour",
            "per day",
            "per minute",
            "busiest",
        ],
    ),
    (
        Intent::InputDistribution,
        &[
            "distribution",
            "typical",
            "range",
            "what values",
            "which values",
            "inputs",
            "input",
            "arguments",
            "parameters",
            "look like",
        ],
    ),
    (Intent::Examples, &["example", "sample", "show"]),
];

/// Reads a question. `known` are the recorded function names; `now` anchors relative times.
pub fn interpret(question: &str, known: &[String], now: SystemTime) -> Interpretation {
    let text = format!(" {} ", question.to_lowercase());
    let intent = INTENTS
        .iter()
        .find(|(_, words)| words.iter().any(|w| text.contains(w)))
        .map_or(Intent::Help, |(intent, _)| *intent);
    Interpretation {
        intent,
        function: find_function(question, known),
        window: find_window(&text, now),
        builds: find_builds(&text),
        count: find_count(&text),
    }
}

fn words(question: &str) -> Vec<String> {
    question
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '?' | '!' | '"' | '`' | '\''))
        .map(|w| {
            w.trim_end_matches(['.', ':', ';'])
                .trim_end_matches("()")
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

const STOP_WORDS: &[&str] = &[
    "what",
    "which",
    "show",
    "calls",
    "call",
    "errors",
    "error",
    "inputs",
    "input",
    "slowest",
    "the",
    "this",
    "last",
    "week",
    "month",
    "today",
    "since",
    "how",
    "many",
    "often",
    "does",
    "with",
    "from",
    "cause",
    "called",
    "changed",
    "between",
    "builds",
    "build",
    "examples",
    "example",
    "functions",
];

fn find_function(question: &str, known: &[String]) -> Option<String> {
    let ws = words(question);
    // Names with `::` or `_` first: they are the most specific.
    let mut candidates: Vec<&String> = ws.iter().collect();
    candidates.sort_by_key(|w| !(w.contains("::") || w.contains('_')));
    for w in &candidates {
        if let Ok(found) = match_function(w, known) {
            return Some(found);
        }
    }
    // A near miss of a name's last segment (`proces_order`).
    let mut best: Option<(usize, &String)> = None;
    for w in candidates
        .iter()
        .filter(|w| w.len() >= 5 && !STOP_WORDS.contains(&w.to_lowercase().as_str()))
    {
        for name in known {
            let last = name.rsplit("::").next().unwrap_or(name);
            let last = last.split('(').next().unwrap_or(last);
            let d =
                chronicle_symbols::resolve::levenshtein(&w.to_lowercase(), &last.to_lowercase());
            if d <= 2 && d * 4 <= last.len() && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, name));
            }
        }
    }
    best.map(|(_, name)| name.clone())
}

fn days_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / DAY
}

fn at_day(day: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(day * DAY)
}

/// Monday = 0. 1970-01-01 was a Thursday.
fn weekday(day: u64) -> u64 {
    (day + 3) % 7
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn unit_secs(unit: &str) -> Option<u64> {
    let unit = unit.trim_end_matches('s');
    Some(match unit {
        "second" | "sec" => 1,
        "minute" | "min" => 60,
        "hour" | "hr" | "h" => 3600,
        "day" | "d" => DAY,
        "week" | "w" => 7 * DAY,
        "month" => 30 * DAY,
        _ => return None,
    })
}

fn find_window(text: &str, now: SystemTime) -> Window {
    let today = days_since_epoch(now);
    let monday = today - weekday(today);
    let ws: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '?' | '!' | '.'))
        .filter(|w| !w.is_empty())
        .collect();
    let since = |t| Window {
        since: Some(t),
        until: None,
    };
    for (i, w) in ws.iter().enumerate() {
        let next = ws.get(i + 1).copied().unwrap_or("");
        let after_next = ws.get(i + 2).copied().unwrap_or("");
        match (*w, next) {
            ("today", _) => return since(at_day(today)),
            ("yesterday", _) => {
                return Window {
                    since: Some(at_day(today - 1)),
                    until: Some(at_day(today)),
                };
            }
            ("this", "week") => return since(at_day(monday)),
            ("last", "week") | ("previous", "week") => {
                return Window {
                    since: Some(at_day(monday - 7)),
                    until: Some(at_day(monday)),
                };
            }
            ("this", "month") => return since(month_start(now)),
            ("last" | "past", n) => {
                if let Ok(n) = n.parse::<u64>()
                    && let Some(unit) = unit_secs(after_next)
                {
                    return since(now - Duration::from_secs(n * unit));
                }
                if let Some(unit) = unit_secs(n) {
                    return since(now - Duration::from_secs(unit));
                }
            }
            ("since", day) => {
                if let Some(wd) = WEEKDAYS.iter().position(|d| *d == day) {
                    let back = (weekday(today) + 7 - wd as u64) % 7;
                    return since(at_day(today - back));
                }
                if let Some(t) = parse_date(day) {
                    return since(t);
                }
            }
            _ => {}
        }
    }
    Window::default()
}

fn month_start(now: SystemTime) -> SystemTime {
    let (y, m, _) = civil(days_since_epoch(now));
    at_day(days_from_civil(y, m, 1))
}

/// `YYYY-MM-DD` at midnight UTC.
pub(crate) fn parse_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d) && y >= 1970)
        .then(|| at_day(days_from_civil(y, m, d)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) as u64
}

fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn is_build(w: &str) -> bool {
    w.len() >= 4 && w.chars().all(|c| c.is_ascii_hexdigit())
}

fn find_builds(text: &str) -> Option<(String, String)> {
    let ws: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '?' | '!'))
        .filter(|w| !w.is_empty())
        .collect();
    let builds: Vec<&str> = ws
        .iter()
        .enumerate()
        .filter(|(i, w)| {
            is_build(w)
                && (*i > 0
                    && matches!(
                        ws[i - 1],
                        "build" | "builds" | "and" | "to" | "vs" | "versus"
                    ))
        })
        .map(|(_, w)| *w)
        .collect();
    match builds.as_slice() {
        [a, b, ..] => Some(((*a).to_owned(), (*b).to_owned())),
        _ => None,
    }
}

fn find_count(text: &str) -> Option<usize> {
    let ws: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in ws.iter().enumerate() {
        if let Ok(n) = w.parse::<usize>() {
            let before = if i > 0 { ws[i - 1] } else { "" };
            let after = ws.get(i + 1).copied().unwrap_or("");
            let unit = after.trim_end_matches(['?', '.', ',']);
            let is_time = unit_secs(unit).is_some();
            if !is_time && (before == "top" || before == "first" || !unit.is_empty()) && n > 0 {
                return Some(n.min(1000));
            }
        }
    }
    None
}

/// What `ask` can answer, for questions it does not understand.
pub fn help(known: &[String], question: &str) -> Json {
    let f = known.first().map_or("process_order", String::as_str);
    json!({
        "type": "help",
        "question": question,
        "message": "I could not tell what you want to know. Ask about errors, performance, \
                    changes over time or between builds, how often a function is called, \
                    what its inputs look like, examples, what it calls (files, network, HTTP, \
                    databases), or which functions were recorded.",
        "examples": [
            format!("What inputs cause errors in {f}?"),
            format!("Show me the 5 slowest calls to {f}"),
            format!("How has {f} behavior changed this week?"),
            format!("How often is {f} called per hour?"),
            format!("What do the inputs to {f} look like?"),
            format!("Show me examples of {f}"),
            format!("What does {f} call?"),
            "Which functions were recorded?".to_owned(),
        ],
        "functions": known,
    })
}

impl BehaviorAgent<'_> {
    /// Answers a question about the recorded behaviour (see the module docs for what is
    /// understood). Never fails on the question itself: what is not understood gets a
    /// `help` answer.
    pub fn query(&self, question: &str) -> Result<Json, StorageError> {
        self.query_at(question, SystemTime::now())
    }

    /// [`BehaviorAgent::query`] with "now" given, for relative times.
    pub fn query_at(&self, question: &str, now: SystemTime) -> Result<Json, StorageError> {
        answer(self.storage(), question, now)
    }
}

/// Answers `question` from `storage`.
pub fn answer(
    storage: &dyn Storage,
    question: &str,
    now: SystemTime,
) -> Result<Json, StorageError> {
    let known = storage.function_names()?;
    let i = interpret(question, &known, now);
    let needs_function = !matches!(
        i.intent,
        Intent::Functions | Intent::Help | Intent::Frequency
    );
    let function = match (&i.function, known.as_slice()) {
        (Some(f), _) => f.clone(),
        // One function recorded: questions about "it" are about that one.
        (None, [only]) => only.clone(),
        (None, _) if needs_function => {
            let mut h = help(&known, question);
            h["message"] = format!(
                "Which function? Name one of the recorded functions in the question ({}).",
                known.join(", ")
            )
            .into();
            h["understood"] = i.intent.as_str().into();
            return Ok(h);
        }
        (None, _) => String::new(),
    };
    let scope = Scope {
        function: function.clone(),
        since: i.window.since,
        until: i.window.until,
        build_id: None,
    };
    let mut out = match i.intent {
        Intent::Help => help(&known, question),
        Intent::Functions => analysis::functions(storage)?,
        Intent::ErrorAnalysis => analysis::error_analysis(storage, &scope)?,
        Intent::Performance => analysis::performance(storage, &scope, i.count.unwrap_or(5))?,
        Intent::Frequency => {
            let bucket = if text_has(question, "per minute") {
                Duration::from_secs(60)
            } else if text_has(question, "per day") || text_has(question, "daily") {
                Duration::from_secs(DAY)
            } else {
                Duration::from_secs(3600)
            };
            analysis::frequency(storage, &scope, bucket)?
        }
        Intent::InputDistribution => analysis::input_distribution(storage, &scope)?,
        Intent::Examples => analysis::examples(storage, &scope, i.count.unwrap_or(5))?,
        Intent::Dependencies => analysis::dependencies(storage, &scope)?,
        Intent::Drift => {
            let (before, after) = drift_periods(storage, &i, &function, now)?;
            analysis::drift(storage, &before, &after)?
        }
    };
    out["question"] = question.into();
    Ok(out)
}

fn text_has(question: &str, words: &str) -> bool {
    question.to_lowercase().contains(words)
}

/// The two sides of a drift question: two builds, or a period and the one before it.
fn drift_periods(
    storage: &dyn Storage,
    i: &Interpretation,
    function: &str,
    now: SystemTime,
) -> Result<(Period, Period), StorageError> {
    if let Some((a, b)) = &i.builds {
        let builds = storage.build_ids(function)?;
        let full = |prefix: &str| {
            builds
                .iter()
                .find(|b| b.starts_with(prefix))
                .cloned()
                .unwrap_or_else(|| prefix.to_owned())
        };
        let side = |id: String| Period {
            label: format!("build {}", &id[..id.len().min(12)]),
            scope: Scope {
                function: function.to_owned(),
                build_id: Some(id),
                ..Scope::default()
            },
        };
        return Ok((side(full(a)), side(full(b))));
    }
    let since = i.window.since.unwrap_or(now - Duration::from_secs(7 * DAY));
    let until = i.window.until.unwrap_or(now);
    let length = until.duration_since(since).unwrap_or_default();
    let scope = |since, until| Scope {
        function: function.to_owned(),
        since: Some(since),
        until: Some(until),
        build_id: None,
    };
    Ok((
        Period {
            label: "previous period".into(),
            scope: scope(since - length, since),
        },
        Period {
            label: "asked period".into(),
            scope: scope(since, until),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    /// Thursday 2026-11-26 15:00:00 UTC.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_705_200)
    }

    fn known() -> Vec<String> {
        [
            "orders::process_order",
            "orders::validate_user",
            "payments::charge_card",
            "shipping_zone",
            "make_quote",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `(intent, function, since, until, builds, count)` as compact text.
    fn reading(question: &str) -> String {
        let i = interpret(question, &known(), now());
        let t = |t: Option<SystemTime>| t.map_or("-".to_owned(), rfc3339);
        format!(
            "{} {} {} {} {} {}",
            i.intent.as_str(),
            i.function.as_deref().unwrap_or("-"),
            t(i.window.since),
            t(i.window.until),
            i.builds
                .map_or("-".to_owned(), |(a, b)| format!("{a}..{b}")),
            i.count.map_or("-".to_owned(), |n| n.to_string()),
        )
    }

    #[test]
    fn the_clock_of_the_corpus() {
        assert_eq!(rfc3339(now()), "2026-11-26T15:00:00Z");
        assert_eq!(weekday(days_since_epoch(now())), 3, "a Thursday");
        assert_eq!(civil(days_since_epoch(now())), (2026, 11, 26));
    }

    #[test]
    fn corpus() {
        let corpus: &[(&str, &str)] = &[
            // Errors.
            (
                "What inputs cause errors in process_order?",
                "error_analysis orders::process_order - - - -",
            ),
            (
                "Why does process_order fail?",
                "error_analysis orders::process_order - - - -",
            ),
            (
                "which calls to validate_user failed this week",
                "error_analysis orders::validate_user 2026-11-23T00:00:00Z - - -",
            ),
            (
                "Show me the errors of charge_card today",
                "error_analysis payments::charge_card 2026-11-26T00:00:00Z - - -",
            ),
            (
                "Did payments::charge_card crash yesterday?",
                "error_analysis payments::charge_card 2026-11-25T00:00:00Z 2026-11-26T00:00:00Z - -",
            ),
            (
                "what goes wrong in make_quote",
                "error_analysis make_quote - - - -",
            ),
            (
                "Any exceptions in process_order in the last 24 hours?",
                "error_analysis orders::process_order 2026-11-25T15:00:00Z - - -",
            ),
            (
                "error rate of process_order()",
                "error_analysis orders::process_order - - - -",
            ),
            (
                "panics in proces_order",
                "error_analysis orders::process_order - - - -",
            ),
            // Performance.
            (
                "Show me the slowest calls to validate_user",
                "performance orders::validate_user - - - -",
            ),
            (
                "What are the 10 slowest calls of process_order?",
                "performance orders::process_order - - - 10",
            ),
            (
                "How long does charge_card take?",
                "performance payments::charge_card - - - -",
            ),
            (
                "p99 latency of make_quote since Monday",
                "performance make_quote 2026-11-23T00:00:00Z - - -",
            ),
            (
                "Is shipping_zone fast?",
                "performance shipping_zone - - - -",
            ),
            (
                "top 3 slow calls to process_order last week",
                "performance orders::process_order 2026-11-16T00:00:00Z 2026-11-23T00:00:00Z - 3",
            ),
            (
                "performance of validate_user in the past 2 hours",
                "performance orders::validate_user 2026-11-26T13:00:00Z - - -",
            ),
            (
                "what's the median duration of make_quote",
                "performance make_quote - - - -",
            ),
            // Drift.
            (
                "How has process_order behavior changed this week?",
                "drift orders::process_order 2026-11-23T00:00:00Z - - -",
            ),
            (
                "Did make_quote change between builds 5d41402a and 7f3c9e01?",
                "drift make_quote - - 5d41402a..7f3c9e01 -",
            ),
            (
                "compare shipping_zone build abcd1234 vs build 0123abcd",
                "drift shipping_zone - - abcd1234..0123abcd -",
            ),
            (
                "drift in charge_card over the last 30 days",
                "drift payments::charge_card 2026-10-27T15:00:00Z - - -",
            ),
            (
                "is validate_user different since 2026-11-01?",
                "drift orders::validate_user 2026-11-01T00:00:00Z - - -",
            ),
            (
                "Did process_order regress yesterday?",
                "drift orders::process_order 2026-11-25T00:00:00Z 2026-11-26T00:00:00Z - -",
            ),
            (
                "process_order this week versus last week",
                "drift orders::process_order 2026-11-23T00:00:00Z - - -",
            ),
            // Frequency.
            (
                "How often is make_quote called?",
                "frequency make_quote - - - -",
            ),
            (
                "How many times was charge_card called today?",
                "frequency payments::charge_card 2026-11-26T00:00:00Z - - -",
            ),
            (
                "call volume of process_order per hour",
                "frequency orders::process_order - - - -",
            ),
            (
                "frequency of shipping_zone in the last hour",
                "frequency shipping_zone 2026-11-26T14:00:00Z - - -",
            ),
            (
                "how many calls did validate_user get since tuesday",
                "frequency orders::validate_user 2026-11-24T00:00:00Z - - -",
            ),
            (
                "count of make_quote calls this month",
                "frequency make_quote 2026-11-01T00:00:00Z - - -",
            ),
            // Input distribution.
            (
                "What do the inputs to process_order look like?",
                "input_distribution orders::process_order - - - -",
            ),
            (
                "distribution of arguments for charge_card",
                "input_distribution payments::charge_card - - - -",
            ),
            (
                "typical parameters of make_quote",
                "input_distribution make_quote - - - -",
            ),
            (
                "what values does shipping_zone receive",
                "input_distribution shipping_zone - - - -",
            ),
            (
                "range of validate_user arguments last 7 days",
                "input_distribution orders::validate_user 2026-11-19T15:00:00Z - - -",
            ),
            // Examples.
            (
                "Show me examples of make_quote",
                "examples make_quote - - - -",
            ),
            (
                "give me 3 example calls of shipping_zone",
                "examples shipping_zone - - - 3",
            ),
            (
                "sample calls to process_order from today",
                "examples orders::process_order 2026-11-26T00:00:00Z - - -",
            ),
            // Dependencies.
            (
                "What does process_order call?",
                "dependencies orders::process_order - - - -",
            ),
            (
                "which SQL statements does make_quote run",
                "dependencies make_quote - - - -",
            ),
            (
                "what files does shipping_zone touch today",
                "dependencies shipping_zone 2026-11-26T00:00:00Z - - -",
            ),
            (
                "which HTTP endpoints does process_order hit",
                "dependencies orders::process_order - - - -",
            ),
            (
                "what external services does validate_user depend on",
                "dependencies orders::validate_user - - - -",
            ),
            // Functions.
            ("Which functions were recorded?", "functions - - - - -"),
            ("list functions", "functions - - - - -"),
            ("what functions are there", "functions - - - - -"),
            // Not understood.
            ("hello there", "help - - - - -"),
            ("", "help - - - - -"),
            (
                "tell me a joke about orders::process_order",
                "help orders::process_order - - - -",
            ),
        ];
        assert!(corpus.len() >= 40);
        let mut wrong = Vec::new();
        for (q, expect) in corpus {
            let got = reading(q);
            if got != *expect {
                wrong.push(format!("{q:?}\n   got:    {got}\n   expect: {expect}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} misread:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn dates() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 11, 26), (2100, 12, 31)] {
            assert_eq!(civil(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("soon"), None);
    }
}

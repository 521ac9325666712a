//! Test vectors beside a module: `*.test.jsonl`, one case per line:
//!
//! ```json
//! {"input": <normalized event>, "config": {...}, "expect": "keep" | "drop" | {"replace": <event or subset>} | {"error": true}}
//! ```
//!
//! `config` is optional (default: the filter's own). For `replace`, the
//! expected value is matched as a subset: every field given must be equal in
//! the output (objects recursively), others are not checked. A module that
//! answers `edit` passes a `replace` vector when the edited event matches.
//!
//! The vectors of `dir/NAME.wasm` are `dir/NAME.test.jsonl` and
//! `dir/NAME.*.test.jsonl`; when `dir` holds no other `.wasm` file, every
//! `*.test.jsonl` in it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::StepResult;
use crate::event::Event;

/// What a vector expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Keep,
    Drop,
    /// The output event must contain these fields with these values.
    Replace(Value),
    /// The call must fail (any failure kind).
    Error,
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Vector {
    pub file: PathBuf,
    pub line: usize,
    pub input: Event,
    /// The `config` for `init` as JSON; None = the filter's own.
    pub config: Option<String>,
    pub expect: Expect,
}

impl Vector {
    /// "file:line".
    pub fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVector {
    input: Value,
    #[serde(default)]
    config: Option<Value>,
    expect: Value,
}

/// The vector files of a module.
pub fn files_for(module: &Path) -> Vec<PathBuf> {
    let Some(dir) = module.parent() else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let stem = module.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut tests = Vec::new();
    let mut other_wasm = false;
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if name.ends_with(".wasm") && path.file_stem().and_then(|s| s.to_str()) != Some(stem) {
            other_wasm = true;
        }
        if name.ends_with(".test.jsonl") && !name.starts_with('.') {
            tests.push((name, path));
        }
    }
    let own = |n: &str| n == format!("{stem}.test.jsonl") || n.starts_with(&format!("{stem}."));
    let mut out: Vec<PathBuf> = tests
        .into_iter()
        .filter(|(n, _)| !other_wasm || own(n))
        .map(|(_, p)| p)
        .collect();
    out.sort();
    out
}

/// Parses one `expect` value.
pub fn parse_expect(v: &Value) -> Result<Expect, String> {
    match v {
        Value::String(s) if s == "keep" => Ok(Expect::Keep),
        Value::String(s) if s == "drop" => Ok(Expect::Drop),
        Value::Object(m) if m.len() == 1 && m.contains_key("replace") => Ok(Expect::Replace(m["replace"].clone())),
        Value::Object(m) if m.len() == 1 && m.get("error") == Some(&Value::Bool(true)) => Ok(Expect::Error),
        other => Err(format!(
            "`expect` must be \"keep\", \"drop\", {{\"replace\": {{...}}}} or {{\"error\": true}}, not {other}"
        )),
    }
}

/// Parses a vector line; `Ok(None)` for blank lines and `//` comments.
pub fn parse_line(text: &str, file: &Path, line: usize) -> Result<Option<Vector>, String> {
    let t = text.trim();
    if t.is_empty() || t.starts_with("//") {
        return Ok(None);
    }
    let place = format!("{}:{line}", file.display());
    let raw: RawVector = serde_json::from_str(t).map_err(|e| format!("{place}: not a test vector: {e}"))?;
    let input: Event =
        serde_json::from_value(raw.input).map_err(|e| format!("{place}: `input` is not a normalized event: {e}"))?;
    let config = match raw.config {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        Some(other) => return Err(format!("{place}: `config` must be an object, not {other}")),
    };
    let expect = parse_expect(&raw.expect).map_err(|e| format!("{place}: {e}"))?;
    Ok(Some(Vector {
        file: file.to_path_buf(),
        line,
        input,
        config,
        expect,
    }))
}

/// Reads every vector of a file.
pub fn read_file(path: &Path) -> Result<Vec<Vector>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(v) = parse_line(l, path, i + 1)? {
            out.push(v);
        }
    }
    Ok(out)
}

/// Whether `actual` contains `expected` (objects as subsets, recursively).
pub fn subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| subset(v, av))),
        _ => expected == actual,
    }
}

/// Checks a result for `input` against the expectation; Err says what
/// differs. An `edit` result satisfies `{"replace": ...}` when the edited
/// event does: a module may switch from replace to edit and keep its vectors.
pub fn check(expect: &Expect, result: &StepResult, input: &Event) -> Result<(), String> {
    let got = describe(result);
    let output = |actual: Value, want: &Value| {
        if subset(want, &actual) {
            Ok(())
        } else {
            Err(format!("expected a replacement containing {want}, got {actual}"))
        }
    };
    match (expect, result) {
        (Expect::Keep, StepResult::Keep) | (Expect::Drop, StepResult::Drop) => Ok(()),
        (Expect::Error, StepResult::Failed(_)) => Ok(()),
        (Expect::Replace(want), StepResult::Replace(ev)) => {
            output(serde_json::to_value(ev).unwrap_or(Value::Null), want)
        }
        (Expect::Replace(want), StepResult::Edit(edits)) => output(
            serde_json::to_value(edits.applied_to(input)).unwrap_or(Value::Null),
            want,
        ),
        (Expect::Keep, _) => Err(format!("expected keep, got {got}")),
        (Expect::Drop, _) => Err(format!("expected drop, got {got}")),
        (Expect::Replace(_), _) => Err(format!("expected replace, got {got}")),
        (Expect::Error, _) => Err(format!("expected an error, got {got}")),
    }
}

/// A short description of a result.
pub fn describe(result: &StepResult) -> String {
    match result {
        StepResult::Keep => "keep".into(),
        StepResult::Drop => "drop".into(),
        StepResult::Replace(_) => "replace".into(),
        StepResult::Edit(e) => format!("edit ({} change{})", e.len(), if e.len() == 1 { "" } else { "s" }),
        StepResult::Failed(e) => format!("error ({e})"),
        StepResult::Bypassed(Some(e)) => format!("bypassed ({e})"),
        StepResult::Bypassed(None) => "bypassed".into(),
    }
}

/// The fields that differ between two JSON values, as `path: before -> after`
/// lines (`+` added, `-` removed, `~` changed).
pub fn diff(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", before, after, &mut out);
    out
}

fn diff_into(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => diff_into(&p, bv, av, out),
                    None => diff_into(&p, bv, &Value::Null, out),
                }
            }
            for (k, av) in a {
                if !b.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    diff_into(&p, &Value::Null, av, out);
                }
            }
        }
        _ if before == after => {}
        (Value::Null, Value::Object(a)) if !a.is_empty() => {
            diff_into(path, &Value::Object(Default::default()), after, out)
        }
        (Value::Object(b), Value::Null) if !b.is_empty() => {
            diff_into(path, before, &Value::Object(Default::default()), out)
        }
        (Value::Null, _) => out.push(format!("+ {path}: {after}")),
        (_, Value::Null) => out.push(format!("- {path}: {before}")),
        _ => out.push(format!("~ {path}: {before} -> {after}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_matches_nested_objects() {
        let actual = json!({"uid": "u", "extra": {"team": "a", "n": 1}, "labels": {}});
        assert!(subset(&json!({"extra": {"team": "a"}}), &actual));
        assert!(!subset(&json!({"extra": {"team": "b"}}), &actual));
        assert!(!subset(&json!({"missing": 1}), &actual));
    }

    #[test]
    fn expect_forms() {
        assert_eq!(parse_expect(&json!("keep")).unwrap(), Expect::Keep);
        assert_eq!(parse_expect(&json!("drop")).unwrap(), Expect::Drop);
        assert_eq!(parse_expect(&json!({"error": true})).unwrap(), Expect::Error);
        assert_eq!(
            parse_expect(&json!({"replace": {"a": 1}})).unwrap(),
            Expect::Replace(json!({"a": 1}))
        );
        assert!(parse_expect(&json!("maybe")).is_err());
    }

    #[test]
    fn diff_lists_changed_fields() {
        let d = diff(
            &json!({"a": 1, "b": {"c": 2}, "gone": true, "n": null}),
            &json!({"a": 1, "b": {"c": 3}, "new": "x", "n": "set", "extra": {"team": "t", "deep": {"k": 1}}}),
        );
        assert_eq!(
            d,
            vec![
                "~ b.c: 2 -> 3",
                "- gone: true",
                "+ n: \"set\"",
                "+ extra.deep.k: 1",
                "+ extra.team: \"t\"",
                "+ new: \"x\""
            ]
        );
    }
}

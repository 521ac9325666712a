//! Field matchers for routes: exact, glob and regex patterns, any-of and
//! none-of lists, parsed with each pattern's position kept so a bad regex is
//! reported at its own line and column.
//!
//! Forms accepted for one field:
//! - `"Warning"`: one pattern;
//! - `["kube-system", "glob:prod-*"]`: any of these patterns;
//! - `{ exact = "..", glob = "..", regex = "..", any_of = [..], none_of = [..] }`:
//!   every key given must hold.
//!
//! A pattern string is exact unless it starts with `glob:` or `regex:`.
//! Regexes must match the whole value.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One compiled pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    Glob(String, globset::GlobMatcher),
    Regex(String, regex::Regex),
}

impl Pattern {
    /// Compiles `exact`, `glob:…` or `regex:…`.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if let Some(g) = s.strip_prefix("glob:") {
            Self::glob(g)
        } else if let Some(r) = s.strip_prefix("regex:") {
            Self::regex(r)
        } else {
            Ok(Pattern::Exact(s.to_string()))
        }
    }

    pub fn glob(g: &str) -> Result<Pattern, String> {
        globset::GlobBuilder::new(g)
            .literal_separator(false)
            .build()
            .map(|glob| Pattern::Glob(g.to_string(), glob.compile_matcher()))
            .map_err(|e| format!("invalid glob `{g}`: {e}"))
    }

    pub fn regex(r: &str) -> Result<Pattern, String> {
        // Check the text as written first, so the error quotes the user's regex.
        let check = regex::Regex::new(r).and_then(|_| regex::Regex::new(&format!("^(?:{r})$")));
        check.map(|re| Pattern::Regex(r.to_string(), re)).map_err(|e| {
            let text = e.to_string();
            let why = text
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("error: ")
                .to_string();
            format!("invalid regex `{r}`: {why}")
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Glob(_, m) => m.is_match(value),
            Pattern::Regex(_, re) => re.is_match(value),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) => write!(f, "\"{s}\""),
            Pattern::Glob(g, _) => write!(f, "glob \"{g}\""),
            Pattern::Regex(r, _) => write!(f, "regex \"{r}\""),
        }
    }
}

/// A field matcher as written in the file, before compiling.
#[derive(Debug, Clone, Default)]
pub struct MatcherSpec {
    pub exact: Option<Spanned<String>>,
    pub glob: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    /// Pattern strings (with optional `glob:`/`regex:` prefix).
    pub any_of: Vec<Spanned<String>>,
    pub none_of: Vec<Spanned<String>>,
    /// The one-string form (a pattern string).
    pub single: Option<Spanned<String>>,
}

/// A compiled field matcher: all of `all`, at least one of `any_of` (if
/// given), none of `none_of`.
#[derive(Debug, Clone, Default)]
pub struct FieldMatcher {
    pub all: Vec<Pattern>,
    pub any_of: Vec<Pattern>,
    pub none_of: Vec<Pattern>,
}

impl MatcherSpec {
    /// Compiles every pattern; each error comes with its pattern's span.
    pub fn compile(&self) -> Result<FieldMatcher, Vec<(Range<usize>, String)>> {
        let mut errors = Vec::new();
        let mut out = FieldMatcher::default();
        let mut one = |s: &Spanned<String>, f: fn(&str) -> Result<Pattern, String>| match f(s.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push((s.span(), e));
                None
            }
        };
        let exact = |s: &str| Ok(Pattern::Exact(s.to_string()));
        out.all
            .extend(self.single.as_ref().and_then(|s| one(s, Pattern::parse)));
        out.all.extend(self.exact.as_ref().and_then(|s| one(s, exact)));
        out.all.extend(self.glob.as_ref().and_then(|s| one(s, Pattern::glob)));
        out.all.extend(self.regex.as_ref().and_then(|s| one(s, Pattern::regex)));
        out.any_of
            .extend(self.any_of.iter().filter_map(|s| one(s, Pattern::parse)));
        out.none_of
            .extend(self.none_of.iter().filter_map(|s| one(s, Pattern::parse)));
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }
}

impl FieldMatcher {
    pub fn matches(&self, value: &str) -> bool {
        self.all.iter().all(|p| p.matches(value))
            && (self.any_of.is_empty() || self.any_of.iter().any(|p| p.matches(value)))
            && !self.none_of.iter().any(|p| p.matches(value))
    }

    /// Why `value` does or does not match, in words.
    pub fn explain(&self, value: &str) -> String {
        let mut parts = Vec::new();
        for p in &self.all {
            parts.push(format!(
                "{} {}",
                if p.matches(value) { "matches" } else { "does not match" },
                p
            ));
        }
        if !self.any_of.is_empty() {
            let hit = self.any_of.iter().find(|p| p.matches(value));
            parts.push(match hit {
                Some(p) => format!("matches {p} of any_of"),
                None => format!("matches none of any_of [{}]", list(&self.any_of)),
            });
        }
        if let Some(p) = self.none_of.iter().find(|p| p.matches(value)) {
            parts.push(format!("matches {p} of none_of"));
        } else if !self.none_of.is_empty() {
            parts.push("avoids every none_of pattern".to_string());
        }
        parts.join(", ")
    }
}

fn list(ps: &[Pattern]) -> String {
    ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl<'de> Deserialize<'de> for MatcherSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SpecVisitor)
    }
}

struct SpecVisitor;

const KEYS: &[&str] = &["exact", "glob", "regex", "any_of", "none_of"];

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = MatcherSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pattern string, a list of pattern strings, or a table with exact/glob/regex/any_of/none_of")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MatcherSpec, A::Error> {
        let mut spec = MatcherSpec::default();
        while let Some(s) = seq.next_element::<Spanned<String>>()? {
            spec.any_of.push(s);
        }
        if spec.any_of.is_empty() {
            return Err(de::Error::custom(
                "an empty list matches nothing; remove the key to match everything",
            ));
        }
        Ok(spec)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MatcherSpec, A::Error> {
        let mut spec = MatcherSpec::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "exact" => spec.exact = Some(map.next_value()?),
                "glob" => spec.glob = Some(map.next_value()?),
                "regex" => spec.regex = Some(map.next_value()?),
                "any_of" => spec.any_of = map.next_value()?,
                "none_of" => spec.none_of = map.next_value()?,
                other => return Err(de::Error::unknown_field(other, KEYS)),
            }
        }
        Ok(spec)
    }

    // Strings arrive here only when the caller did not ask for a span; the
    // route model always wraps the matcher in `Spanned`, see `SpannedSpec`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MatcherSpec, E> {
        Ok(MatcherSpec {
            single: Some(Spanned::new(0..0, v.to_string())),
            ..Default::default()
        })
    }
}

/// A matcher with the span of its whole value, so the one-string form keeps
/// its position.
#[derive(Debug, Clone)]
pub struct SpannedSpec(pub MatcherSpec);

impl<'de> Deserialize<'de> for SpannedSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<MatcherSpec> = Spanned::deserialize(d)?;
        let span = s.span();
        let mut spec = s.into_inner();
        if let Some(single) = spec.single.take() {
            spec.single = Some(Spanned::new(span, single.into_inner()));
        }
        Ok(SpannedSpec(spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("Warning").unwrap().matches("Warning"));
        assert!(!Pattern::parse("Warning").unwrap().matches("warning"));
        let g = Pattern::parse("glob:Failed*").unwrap();
        assert!(g.matches("FailedMount") && !g.matches("BackOff"));
        let r = Pattern::parse("regex:Back(Off|off)").unwrap();
        assert!(r.matches("BackOff") && !r.matches("BackOffX"), "regex is anchored");
        assert_eq!(
            Pattern::parse("regex:(").unwrap_err(),
            "invalid regex `(`: unclosed group"
        );
        assert!(Pattern::parse("glob:[a").unwrap_err().contains("invalid glob"));
    }

    #[test]
    fn matcher_logic() {
        let m = FieldMatcher {
            all: vec![Pattern::parse("glob:prod-*").unwrap()],
            any_of: vec![],
            none_of: vec![Pattern::parse("prod-test").unwrap()],
        };
        assert!(m.matches("prod-eu"));
        assert!(!m.matches("prod-test"));
        assert!(!m.matches("dev"));
        assert!(m.explain("prod-test").contains("none_of"));
        let any = FieldMatcher {
            any_of: vec![Pattern::parse("a").unwrap(), Pattern::parse("regex:b+").unwrap()],
            ..Default::default()
        };
        assert!(any.matches("bbb") && any.matches("a") && !any.matches("c"));
    }
}

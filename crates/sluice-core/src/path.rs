//! Field paths: where a field sits in a nested event, such as `user.id` or
//! `` payload.`geo.ip` `` (a key that itself holds a dot is quoted with backticks).

use std::fmt;

/// A path into nested objects: one or more keys, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<String>);

/// Why a path cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field path `{text}`: {message}")]
pub struct PathError {
    /// The path as written.
    pub text: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl FieldPath {
    /// Reads `a.b.c`, where a key quoted in backticks (`` `geo.ip` ``) may hold dots and any
    /// other character but a backtick. Every key must be non-empty.
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let err = |message: &str| PathError {
            text: text.to_owned(),
            message: message.to_owned(),
        };
        let mut keys = Vec::new();
        let mut rest = text;
        loop {
            let key = if let Some(quoted) = rest.strip_prefix('`') {
                let end = quoted
                    .find('`')
                    .ok_or_else(|| err("a backtick is not closed"))?;
                let key = &quoted[..end];
                rest = &quoted[end + 1..];
                key
            } else {
                let end = rest.find(['.', '`']).unwrap_or(rest.len());
                let key = &rest[..end];
                rest = &rest[end..];
                key
            };
            if key.is_empty() {
                return Err(err(
                    "a key is empty; write keys separated by single dots, e.g. user.id, and \
                     quote a key holding a dot with backticks, e.g. `geo.ip`",
                ));
            }
            keys.push(key.to_owned());
            if rest.is_empty() {
                return Ok(FieldPath(keys));
            }
            rest = rest.strip_prefix('.').ok_or_else(|| {
                err("a quoted key must be followed by a dot or the end, e.g. `geo.ip`.country")
            })?;
        }
    }

    /// The path of these keys, outermost first (at least one, none empty: the keys of a
    /// parsed path or expression).
    pub fn from_keys(keys: Vec<String>) -> FieldPath {
        FieldPath(keys)
    }

    /// A top-level field named `name` (taken as it is, dots included).
    pub fn top(name: &str) -> FieldPath {
        FieldPath(vec![name.to_owned()])
    }

    /// The keys, outermost first.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// The keys joined by dots, unquoted: the column a CSV header names for this path.
    pub fn joined(&self) -> String {
        self.0.join(".")
    }
}

impl fmt::Display for FieldPath {
    /// The canonical text: keys joined by dots, a key quoted in backticks when it holds a dot
    /// (no key holds a backtick).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            if key.contains('.') {
                write!(f, "`{key}`")?;
            } else {
                f.write_str(key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_read_nested_and_quoted_keys() {
        let p = |t: &str| FieldPath::parse(t).map(|p| p.keys().to_vec());
        assert_eq!(p("user_id"), Ok(vec!["user_id".to_owned()]));
        assert_eq!(p("user.id"), Ok(vec!["user".into(), "id".into()]));
        assert_eq!(
            p("payload.`geo.ip`.country"),
            Ok(vec!["payload".into(), "geo.ip".into(), "country".into()])
        );
        assert_eq!(p("`a.b`"), Ok(vec!["a.b".to_owned()]));
        for bad in ["", ".a", "a.", "a..b", "`a", "`a`b", "``", "a`b`"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad}");
        }
        let e = FieldPath::parse("a..b").expect_err("empty key");
        assert!(
            e.to_string()
                .starts_with("field path `a..b`: a key is empty"),
            "{e}"
        );
    }

    #[test]
    fn display_is_canonical_and_reads_back() {
        let path = FieldPath::parse("payload.`geo.ip`").expect("valid");
        assert_eq!(path.to_string(), "payload.`geo.ip`");
        assert_eq!(path.joined(), "payload.geo.ip");
        assert_eq!(
            FieldPath::parse("`user`.id").expect("valid").to_string(),
            "user.id"
        );
    }

    proptest! {
        #[test]
        fn any_keys_without_backticks_round_trip(keys in prop::collection::vec("[^`]{1,8}", 1..4)) {
            let path = FieldPath(keys);
            let text = path.to_string();
            prop_assert_eq!(FieldPath::parse(&text), Ok(path));
        }

        #[test]
        fn no_text_panics(text in ".{0,24}") {
            let _ = FieldPath::parse(&text);
        }
    }
}

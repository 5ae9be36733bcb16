//! StreamFQL, the feature language of the book the seeds come from: `OP(window, event_type,
//! target, on...)`, translated into Sluice's own features (an aggregation with `of`, `by`,
//! `window` and a `where` on the event type), and `F_*` functions over nested operators into
//! a derived feature over hidden aggregated parts.
//!
//! - `COUNT(W, T, a, b...)`: events of type `T` by key `[a, b...]` (the target is part of the
//!   key); `SUM`, `AVG`, `MAX`, `MIN`, `VARIANCE` (population) and `COUNT_DISTINCT(W, T, x,
//!   k...)`: of field `x` by key `[k...]`; `SET(W, T, x, k...)` the distinct values of `x`
//!   (`agg = "set"`).
//! - `T` is `___ALL___` or `*` for every type; an `on` argument `f="v"` is an equality filter
//!   and not part of the key.
//! - `W` is `<n><unit>` with `m`, `h`, `d`, `M` (30 days), or the book's one-letter second
//!   units `U`=1s, `T`=2s, `A`=5s, `B`=10s, `C`=15s, `D`=20s, `E`=25s, `F`=30s.
//! - `F_ABS`, `F_ADD`, `F_MINUS`, `F_MULTIPLY`, `F_DIVIDE`, `F_POW`, `F_SQRT`, `F_EXP`,
//!   `F_LOG` over operators or numbers.
//! - `DIFF(W, T, x, k...)`: the event's own `x` minus the previous one (`lag`) of its key, as
//!   `SQL`'s `x - LAG(x)`: null at an event that is not of type `T`, lacks `x`, or has no
//!   previous value in the window.

use crate::agg::Agg;
use crate::path::FieldPath;

/// A StreamFQL feature, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// Aggregations, the first named as the feature when there is no `expr`; the others are
    /// hidden parts, named `<feature>#<i>`.
    pub aggregations: Vec<Aggregation>,
    /// For a function at the top: the derived expression over the parts.
    pub expr: Option<String>,
}

/// One aggregation of a StreamFQL feature, in Sluice's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    /// Its name: the feature's, or `<feature>#<i>` for a hidden part.
    pub name: String,
    /// The aggregation.
    pub agg: Agg,
    /// The aggregated field (canonical path), if any.
    pub of: Option<String>,
    /// The key fields (canonical paths).
    pub by: Vec<String>,
    /// The window, as written in Sluice (`1d`, `90s`).
    pub window: String,
    /// The filter: the event type and the `on` conditions (canonical expression text).
    pub filter: Option<String>,
    /// For a relation feature (`FLAT_*` over a `SET`): the linking field and which events
    /// make links.
    pub link: Option<Link>,
}

/// The hop-1 side of a relation feature written as `FLAT_*(..., SET(W, T1, via, by...))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The linking field: the `SET`'s target.
    pub via: String,
    /// Which events make links: the `SET`'s type and conditions (canonical expression text).
    pub via_filter: Option<String>,
}

/// Why a StreamFQL text cannot be translated: the byte offset in the text and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fql at column {}: {message}", .offset + 1)]
pub struct FqlError {
    /// Byte offset in the text.
    pub offset: usize,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// A parsed StreamFQL term.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// `NAME(args)`.
    Call {
        name: String,
        args: Vec<Term>,
        at: usize,
    },
    /// A bare word, path or number.
    Word { text: String, at: usize },
    /// `field="value"`.
    Condition {
        field: String,
        value: String,
        at: usize,
    },
}

impl Term {
    fn at(&self) -> usize {
        match self {
            Term::Call { at, .. } | Term::Word { at, .. } | Term::Condition { at, .. } => *at,
        }
    }
}

/// The operators and what they translate to.
const AGGREGATIONS: [(&str, &str); 8] = [
    ("COUNT", "count"),
    ("SUM", "sum"),
    ("AVG", "avg"),
    ("MAX", "max"),
    ("MIN", "min"),
    ("VARIANCE", "variance_pop"),
    ("COUNT_DISTINCT", "distinct_count"),
    ("SET", "set"),
];

/// The functions, their expression form and arity.
const FUNCTIONS: [(&str, &str, usize); 9] = [
    ("F_ABS", "abs", 1),
    ("F_ADD", "+", 2),
    ("F_MINUS", "-", 2),
    ("F_MULTIPLY", "*", 2),
    ("F_DIVIDE", "/", 2),
    ("F_POW", "pow", 2),
    ("F_SQRT", "sqrt", 1),
    ("F_EXP", "exp", 1),
    ("F_LOG", "ln", 1),
];

/// Translates the StreamFQL `text` of feature `name`; `type_field` is the pipeline's event
/// type field (`[event] type`), needed unless every operator counts every type.
pub fn translate(name: &str, text: &str, type_field: Option<&str>) -> Result<Translated, FqlError> {
    let term = Parser { text, at: 0 }.whole()?;
    let mut out = Translated {
        aggregations: Vec::new(),
        expr: None,
    };
    match &term {
        Term::Call { name: op, .. } if aggregation(op).is_some() => {
            let a = aggregation_of(&term, name.to_owned(), type_field)?;
            out.aggregations.push(a);
        }
        Term::Call { name: op, .. } if op.starts_with("FLAT_") => {
            out.aggregations
                .push(flat(&term, name.to_owned(), type_field)?);
        }
        _ => {
            let expr = expression(&term, name, type_field, &mut out.aggregations)?;
            out.expr = Some(expr);
        }
    }
    Ok(out)
}

fn aggregation(op: &str) -> Option<Agg> {
    let (_, agg) = AGGREGATIONS.iter().find(|(o, _)| *o == op)?;
    agg.parse().ok()
}

/// The derived expression of `term`, adding its aggregations as hidden parts (equal ones
/// once).
fn expression(
    term: &Term,
    feature: &str,
    type_field: Option<&str>,
    parts: &mut Vec<Aggregation>,
) -> Result<String, FqlError> {
    match term {
        Term::Word { text, at } => {
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                Ok(text.clone())
            } else {
                Err(FqlError {
                    offset: *at,
                    message: format!(
                        "`{text}` here must be a number or an operator such as SUM(...)"
                    ),
                })
            }
        }
        Term::Condition { at, .. } => Err(FqlError {
            offset: *at,
            message: "a condition `f=\"v\"` only goes among an operator's key fields".into(),
        }),
        Term::Call { name, args, at } => {
            if aggregation(name).is_some() {
                let part = aggregation_of(term, String::new(), type_field)?;
                return Ok(add_part(part, feature, parts));
            }
            if name == "DIFF" {
                return diff(term, feature, type_field, parts);
            }
            if name.starts_with("FLAT_") {
                let part = flat(term, String::new(), type_field)?;
                return Ok(add_part(part, feature, parts));
            }
            if name == "HIST" || name == "F_QUANTILE" {
                return Err(FqlError {
                    offset: *at,
                    message: format!(
                        "{name} is not supported: write the feature in TOML with \
                         agg = \"quantile\" and q (exact, where the book's histogram estimated)"
                    ),
                });
            }
            let Some(&(_, form, arity)) = FUNCTIONS.iter().find(|(f, _, _)| f == name) else {
                let known: Vec<&str> = AGGREGATIONS
                    .iter()
                    .map(|(o, _)| *o)
                    .chain(["DIFF"])
                    .chain(FUNCTIONS.iter().map(|(f, _, _)| *f))
                    .collect();
                return Err(FqlError {
                    offset: *at,
                    message: format!("unknown operator `{name}`; valid: {}", known.join(", ")),
                });
            };
            if args.len() != arity {
                return Err(FqlError {
                    offset: *at,
                    message: format!("{name} takes {arity} argument(s), found {}", args.len()),
                });
            }
            let args: Vec<String> = args
                .iter()
                .map(|a| expression(a, feature, type_field, parts))
                .collect::<Result<_, _>>()?;
            Ok(match (arity, form.chars().all(char::is_alphabetic)) {
                (_, true) => format!("{form}({})", args.join(", ")),
                _ => format!("({} {form} {})", args[0], args[1]),
            })
        }
    }
}

/// Adds `part` to `parts` unless an equal one is there, and returns how an expression reads it.
fn add_part(mut part: Aggregation, feature: &str, parts: &mut Vec<Aggregation>) -> String {
    let same = parts.iter().find(|p| {
        Aggregation {
            name: part.name.clone(),
            ..(*p).clone()
        } == part
    });
    match same {
        Some(p) => format!("`{}`", p.name),
        None => {
            part.name = format!("{feature}#{}", parts.len());
            let reference = format!("`{}`", part.name);
            parts.push(part);
            reference
        }
    }
}

/// `DIFF(W, T, x, k...)`: `x - lag(x)` when the event is of type `T` and has `x` (the parts
/// are `last(x)`, which is then the event's own `x`, and `lag(x)`), else null.
fn diff(
    term: &Term,
    feature: &str,
    type_field: Option<&str>,
    parts: &mut Vec<Aggregation>,
) -> Result<String, FqlError> {
    let last = aggregation_as(term, Agg::Last, String::new(), type_field)?;
    let lag = Aggregation {
        agg: Agg::Lag,
        ..last.clone()
    };
    let of = last.of.clone().expect("DIFF has a field");
    let mut condition = format!("has({of})");
    if let Some(filter) = &last.filter {
        condition = format!("{condition} && {filter}");
    }
    let (last, lag) = (
        add_part(last, feature, parts),
        add_part(lag, feature, parts),
    );
    Ok(format!("({condition} ? {last} - {lag} : null)"))
}

/// A relation feature: `FLAT_COUNT_DISTINCT(W, T2, x, SET(W, T1, via, by...))` (distinct `x`
/// over the `T2` events whose `via` is among the `via` values of the entity's `T1` events)
/// or `FLAT_COUNT(W, T2, [x,] SET(...))` (their number), named `name`.
fn flat(term: &Term, name: String, type_field: Option<&str>) -> Result<Aggregation, FqlError> {
    let Term::Call { name: op, args, at } = term else {
        unreachable!("called on operator calls");
    };
    let err = |offset: usize, message: String| FqlError { offset, message };
    let agg = match op.as_str() {
        "FLAT_COUNT_DISTINCT" => Agg::LinkedDistinctCount,
        "FLAT_COUNT" => Agg::LinkedCount,
        _ => {
            return Err(err(
                *at,
                format!("{op} is not supported; valid: FLAT_COUNT_DISTINCT, FLAT_COUNT"),
            ))
        }
    };
    let shape = format!("{op}(window, event_type, field, SET(window, event_type, via, key...))");
    let Some((Term::Call { name: set, .. }, outer)) = args.split_last() else {
        return Err(err(*at, format!("{op} needs: {shape}")));
    };
    if set != "SET" || outer.len() < 2 || outer.len() > 3 {
        return Err(err(*at, format!("{op} needs: {shape}")));
    }
    let inner = aggregation_of(args.last().expect("split above"), String::new(), type_field)?;
    // The outer operator in the book's order, with the SET's keys as its own: its target (if
    // any) is what is counted.
    let mut outer_args = outer.to_vec();
    if outer.len() == 2 && agg == Agg::LinkedDistinctCount {
        return Err(err(*at, format!("{op} needs the field to count: {shape}")));
    }
    // A placeholder key (and field) so that the outer operator reads in the book's order.
    while outer_args.len() < 4 {
        outer_args.push(Term::Word {
            text: "_".into(),
            at: *at,
        });
    }
    let as_sum = Term::Call {
        name: "SUM".into(),
        args: outer_args,
        at: *at,
    };
    let hop2 = aggregation_as(&as_sum, Agg::Sum, name.clone(), type_field)?;
    let window = if hop2.window == inner.window {
        hop2.window.clone()
    } else {
        return Err(err(
            *at,
            format!(
                "{op} and its SET have one window (the relation's): found {} and {}",
                hop2.window, inner.window
            ),
        ));
    };
    let of = if outer.len() == 3 {
        hop2.of.clone()
    } else {
        None
    };
    Ok(Aggregation {
        name,
        agg,
        of,
        by: inner.by,
        window,
        filter: hop2.filter,
        link: Some(Link {
            via: inner.of.expect("SET has a field"),
            via_filter: inner.filter,
        }),
    })
}

/// The aggregation of an operator call `term`, named `name`.
fn aggregation_of(
    term: &Term,
    name: String,
    type_field: Option<&str>,
) -> Result<Aggregation, FqlError> {
    let Term::Call { name: op, .. } = term else {
        unreachable!("called on operator calls");
    };
    let agg = aggregation(op).expect("checked by the caller");
    aggregation_as(term, agg, name, type_field)
}

/// The aggregation `agg` of an operator call `term` in the book's argument order, named
/// `name`.
fn aggregation_as(
    term: &Term,
    agg: Agg,
    name: String,
    type_field: Option<&str>,
) -> Result<Aggregation, FqlError> {
    let Term::Call { name: op, args, at } = term else {
        unreachable!("called on operator calls");
    };
    let err = |offset: usize, message: String| FqlError { offset, message };
    if args.len() < 3 || (agg != Agg::Count && args.len() < 4) {
        let shape = if agg == Agg::Count {
            "COUNT(window, event_type, key, more keys...)"
        } else {
            "OP(window, event_type, field, key, more keys...)"
        };
        return Err(err(*at, format!("{op} needs at least: {shape}")));
    }
    let word = |t: &Term, what: &str| match t {
        Term::Word { text, .. } => Ok(text.clone()),
        other => Err(err(other.at(), format!("the {what} must be a plain word"))),
    };
    let window = window(&word(&args[0], "window")?).map_err(|m| err(args[0].at(), m))?;
    let event_type = word(&args[1], "event type")?;
    let mut conditions = Vec::new();
    if event_type != "___ALL___" && event_type != "*" {
        let Some(field) = type_field else {
            return Err(err(
                args[1].at(),
                format!(
                    "the event type `{event_type}` needs the type field: add `type = \
                     \"<field>\"` to [event] (or write ___ALL___ for every type)"
                ),
            ));
        };
        conditions.push(format!("{field} == {}", crate::expr::quote(&event_type)));
    }
    let mut fields = Vec::new();
    for a in &args[2..] {
        match a {
            Term::Condition { field, value, at } => {
                let path = path(field).map_err(|m| err(*at, m))?;
                conditions.push(format!("{path} == {}", crate::expr::quote(value)));
            }
            Term::Word { text, at } => fields.push(path(text).map_err(|m| err(*at, m))?),
            Term::Call { at, .. } => {
                return Err(err(*at, "an operator cannot be a key field here".into()));
            }
        }
    }
    let (of, by) = if agg == Agg::Count {
        (None, fields)
    } else if fields.is_empty() {
        return Err(err(*at, format!("{op} needs the field to aggregate")));
    } else {
        let of = fields.remove(0);
        (Some(of), fields)
    };
    Ok(Aggregation {
        name,
        agg,
        of,
        by,
        window,
        filter: (!conditions.is_empty()).then(|| conditions.join(" && ")),
        link: None,
    })
}

/// A field of an operator as a canonical path (the book writes plain names or dotted paths).
fn path(text: &str) -> Result<String, String> {
    FieldPath::parse(text)
        .map(|p| p.to_string())
        .map_err(|e| e.to_string())
}

/// A book window (`1h`, `7d`, `1M`, `3B`) in Sluice's units.
fn window(text: &str) -> Result<String, String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = text.split_at(digits);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("window `{text}`: expected a number then a unit"))?;
    let seconds = match unit {
        "U" => 1,
        "T" => 2,
        "A" => 5,
        "B" => 10,
        "C" => 15,
        "D" => 20,
        "E" => 25,
        "F" => 30,
        "m" => return Ok(format!("{n}m")),
        "h" => return Ok(format!("{n}h")),
        "d" => return Ok(format!("{n}d")),
        "M" => return Ok(format!("{}d", n * 30)),
        _ => {
            return Err(format!(
                "window `{text}`: unknown unit; valid: m, h, d, M (30 days), and the seconds \
                 U=1, T=2, A=5, B=10, C=15, D=20, E=25, F=30"
            ))
        }
    };
    Ok(format!("{}s", n * seconds))
}

/// A recursive-descent reader of StreamFQL terms.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.text[self.at..].starts_with(char::is_whitespace) {
            self.at += self.text[self.at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn err(&self, message: impl Into<String>) -> FqlError {
        FqlError {
            offset: self.at,
            message: message.into(),
        }
    }

    /// The whole text: one term and nothing after it.
    fn whole(mut self) -> Result<Term, FqlError> {
        let term = self.term(0)?;
        self.ws();
        if self.at < self.text.len() {
            return Err(self.err("unexpected text after the operator"));
        }
        Ok(term)
    }

    fn word(&mut self) -> &str {
        let start = self.at;
        let rest = &self.text[start..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '*' | '-' | '`')))
            .unwrap_or(rest.len());
        self.at += len;
        &self.text[start..self.at]
    }

    fn term(&mut self, depth: usize) -> Result<Term, FqlError> {
        if depth > 32 {
            return Err(self.err("operators are nested too deep"));
        }
        self.ws();
        let at = self.at;
        let word = self.word().to_owned();
        if word.is_empty() {
            return Err(self.err("expected an operator, a field or a window"));
        }
        self.ws();
        if self.text[self.at..].starts_with('(') {
            self.at += 1;
            let mut args = Vec::new();
            loop {
                args.push(self.term(depth + 1)?);
                self.ws();
                match self.text[self.at..].chars().next() {
                    Some(',') => self.at += 1,
                    Some(')') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.err("expected `,` or `)`")),
                }
            }
            return Ok(Term::Call {
                name: word,
                args,
                at,
            });
        }
        if self.text[self.at..].starts_with('=') {
            self.at += 1;
            self.ws();
            let value = self.string()?;
            return Ok(Term::Condition {
                field: word,
                value,
                at,
            });
        }
        Ok(Term::Word { text: word, at })
    }

    /// A double-quoted value (`\"` and `\\` escaped).
    fn string(&mut self) -> Result<String, FqlError> {
        if !self.text[self.at..].starts_with('"') {
            return Err(self.err("expected a quoted value after `=`, e.g. status=\"failed\""));
        }
        self.at += 1;
        let mut out = String::new();
        let mut chars = self.text[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        self.at = self.text.len();
        Err(self.err("the quoted value is not closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Aggregation {
        let t = translate("f", text, Some("type")).expect("translates");
        assert!(t.expr.is_none());
        t.aggregations.into_iter().next().expect("one")
    }

    #[test]
    fn operators_take_the_book_argument_order() {
        let sum = one("SUM(1d, transaction, amount, user_id)");
        assert_eq!(
            (
                sum.agg,
                sum.of.as_deref(),
                sum.by.as_slice(),
                sum.window.as_str()
            ),
            (Agg::Sum, Some("amount"), &["user_id".to_owned()][..], "1d")
        );
        assert_eq!(sum.filter.as_deref(), Some(r#"type == "transaction""#));
        // COUNT: the target is part of the key.
        let count = one("COUNT(1h, login, user_id, device_id)");
        assert_eq!((count.agg, count.of), (Agg::Count, None));
        assert_eq!(count.by, ["user_id", "device_id"]);
        // An `on` condition filters and leaves the key.
        let distinct = one(r#"COUNT_DISTINCT(24h, login, device_id, ip_seg24="220.181.111")"#);
        assert_eq!(distinct.agg, Agg::DistinctCount);
        assert_eq!(distinct.of.as_deref(), Some("device_id"));
        assert!(distinct.by.is_empty());
        assert_eq!(
            distinct.filter.as_deref(),
            Some(r#"type == "login" && ip_seg24 == "220.181.111""#)
        );
        // Every type; the book's units.
        let all = one("MAX(3B, ___ALL___, amount, user.id)");
        assert_eq!((all.window.as_str(), all.filter), ("30s", None));
        assert_eq!(one("AVG(2M, *, amount, u)").window, "60d");
    }

    #[test]
    fn functions_become_a_derived_feature_over_hidden_parts() {
        let t = translate(
            "avg_by_hand",
            "F_DIVIDE(SUM(1d, transaction, amount, user_id), COUNT(1d, transaction, user_id))",
            Some("type"),
        )
        .expect("translates");
        assert_eq!(t.aggregations.len(), 2);
        assert_eq!(t.aggregations[0].name, "avg_by_hand#0");
        assert_eq!(
            t.expr.as_deref(),
            Some("(`avg_by_hand#0` / `avg_by_hand#1`)")
        );
        // Equal operators are computed once.
        let t = translate(
            "g",
            "F_ADD(F_SQRT(SUM(1h, *, a, k)), SUM(1h, *, a, k))",
            None,
        )
        .expect("translates");
        assert_eq!(t.aggregations.len(), 1);
        assert_eq!(t.expr.as_deref(), Some("(sqrt(`g#0`) + `g#0`)"));
    }

    #[test]
    fn set_lists_values_and_flat_operators_link_entities() {
        let set = one("SET(7d, register, user_id, device_id)");
        assert_eq!(set.agg, Agg::Set(crate::agg::SET_LIMIT));
        assert_eq!(set.of.as_deref(), Some("user_id"));
        assert_eq!(set.by, ["device_id"]);
        // The book's example: devices logged into by the users who registered on this device.
        let flat =
            one("FLAT_COUNT_DISTINCT(7d, login, device_id, SET(7d, register, user_id, device_id))");
        assert_eq!(flat.agg, Agg::LinkedDistinctCount);
        assert_eq!(flat.by, ["device_id"]);
        assert_eq!(flat.of.as_deref(), Some("device_id"));
        assert_eq!(flat.filter.as_deref(), Some(r#"type == "login""#));
        let link = flat.link.expect("a relation");
        assert_eq!(link.via, "user_id");
        assert_eq!(link.via_filter.as_deref(), Some(r#"type == "register""#));
        let count = one("FLAT_COUNT(1d, *, SET(1d, *, device_id, user_id))");
        assert_eq!(
            (count.agg, count.of, count.filter),
            (Agg::LinkedCount, None, None)
        );
        let e = translate("f", "FLAT_COUNT(1d, *, SET(2d, *, d, u))", None).expect_err("windows");
        assert!(e.message.contains("one window"), "{e}");
    }

    #[test]
    fn diff_is_the_own_value_minus_the_previous_one() {
        let t = translate("d", "DIFF(1d, transaction, amount, user_id)", Some("type"))
            .expect("translates");
        let aggs: Vec<Agg> = t.aggregations.iter().map(|a| a.agg).collect();
        assert_eq!(aggs, [Agg::Last, Agg::Lag]);
        assert!(t
            .aggregations
            .iter()
            .all(|a| a.of.as_deref() == Some("amount")
                && a.by == ["user_id"]
                && a.filter.as_deref() == Some(r#"type == "transaction""#)));
        assert_eq!(
            t.expr.as_deref(),
            Some(r#"(has(amount) && type == "transaction" ? `d#0` - `d#1` : null)"#)
        );
        // The expression is one the derived features accept.
        crate::expr::parse(t.expr.as_deref().expect("an expression")).expect("parses");
    }

    #[test]
    fn mistakes_say_where_and_what() {
        let e = |text: &str, ty: Option<&str>| translate("f", text, ty).expect_err(text);
        assert!(e("SUM(1d, tx, amount, u)", None)
            .message
            .contains("[event]"));
        assert!(e("SUM(1x, *, amount, u)", None)
            .message
            .contains("unknown unit"));
        assert!(e("F_QUANTILE(HIST(1d, *, a, u), 0.9)", None)
            .message
            .contains("agg = \"quantile\""));
        assert!(e("M_RISK(1d)", None).message.contains("unknown operator"));
        assert!(e("DIFF(SUM(1d, *, a, u))", None)
            .message
            .contains("DIFF needs at least"));
        assert!(e("SUM(1d, *, amount)", None).message.contains("needs"));
        let unclosed = e("SUM(1d, *, amount, u", None);
        assert_eq!(unclosed.offset, 20);
        assert!(
            unclosed.to_string().starts_with("fql at column 21: "),
            "{unclosed}"
        );
    }

    proptest! {
        #[test]
        fn no_text_panics(text in "[A-Z_(),=\" 0-9a-z*.]{0,40}") {
            let _ = translate("f", &text, Some("type"));
        }
    }
}

//! Evaluation: three-valued logic, comparisons, `in`, `has`, string methods, arithmetic,
//! functions and the ternary.

use super::super::{parse, Val, Value};
use super::{ev, matches};
use Value::{Bool, Missing, Num, Other, Str};

/// A fixture of every kind of value: `t` `f` booleans, `u` missing, `n` 5, `z` 0, `s` "abc",
/// `e` "", `o` an object. Paths not listed are missing too.
fn fx() -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("t", Bool(true)),
        ("f", Bool(false)),
        ("u", Missing),
        ("n", Num(5.0)),
        ("z", Num(0.0)),
        ("s", Str("abc")),
        ("e", Str("")),
        ("o", Other),
    ]
}

fn e(text: &str) -> String {
    ev(text, &fx())
}

fn m(text: &str) -> bool {
    matches(text, &fx())
}

#[test]
fn and_or_not_follow_kleene_truth_tables() {
    let operand = [("t", "true"), ("f", "false"), ("u", "null")];
    // Rows: left operand; columns: right operand (true, false, unknown).
    let and = [
        ["true", "false", "null"],
        ["false", "false", "false"],
        ["null", "false", "null"],
    ];
    let or = [
        ["true", "true", "true"],
        ["true", "false", "null"],
        ["true", "null", "null"],
    ];
    // The missing field stands for unknown; so does a comparison that is unknown.
    for (i, (a, _)) in operand.iter().enumerate() {
        for (j, (b, _)) in operand.iter().enumerate() {
            assert_eq!(e(&format!("{a} && {b}")), and[i][j], "{a} && {b}");
            assert_eq!(e(&format!("{a} || {b}")), or[i][j], "{a} || {b}");
            let a2 = if *a == "u" { "n == s" } else { a };
            let b2 = if *b == "u" { "(u > 1)" } else { b };
            assert_eq!(e(&format!("{a2} && {b2}")), and[i][j], "{a2} && {b2}");
            assert_eq!(e(&format!("{a2} || {b2}")), or[i][j], "{a2} || {b2}");
            assert_eq!(m(&format!("{a} && {b}")), and[i][j] == "true");
            assert_eq!(m(&format!("{a} || {b}")), or[i][j] == "true");
        }
    }
    assert_eq!(e("!t"), "false");
    assert_eq!(e("!f"), "true");
    assert_eq!(e("!u"), "null");
    assert_eq!(e("!(u == 1)"), "null");
    // Neither a condition nor its negation matches when it is unknown.
    assert!(!m("u == 1") && !m("!(u == 1)") && !m("u != 1"));
    // A value that is not a boolean is unknown to the logic operators.
    assert_eq!(e("n && t"), "null");
    assert_eq!(e("n && f"), "false");
    assert_eq!(e("s || t"), "true");
    assert_eq!(e("!o"), "null");
    assert!(!m("n"), "a number at the top does not match");
    assert!(m("t") && !m("f") && !m("u") && !m("s") && !m("o"));
}

#[test]
fn comparisons_of_numbers_strings_and_booleans() {
    for (text, want) in [
        ("n == 5", "true"),
        ("n == 5.0", "true"),
        ("n != 5", "false"),
        ("n < 6", "true"),
        ("n <= 5", "true"),
        ("n > 5", "false"),
        ("n >= 5.5", "false"),
        ("z == -0", "true"),
        ("s == 'abc'", "true"),
        ("s != \"abd\"", "true"),
        ("s < 'abd'", "true"),
        ("s < 'ab'", "false"),
        ("'B' < 'a'", "true"),
        ("'z' < 'é'", "true"),
        ("e < s", "true"),
        ("t == true", "true"),
        ("t != f", "true"),
        ("f == false", "true"),
        // Booleans have no order, whatever they hold.
        ("t > f", "null"),
        ("t <= t", "null"),
        // Across types: unknown, never false.
        ("n == s", "null"),
        ("n != s", "null"),
        ("n == t", "null"),
        ("s < n", "null"),
        ("o == o", "null"),
        ("o != 1", "null"),
        ("u == u", "null"),
        ("u != 1", "null"),
        ("n == u", "null"),
        ("missing.field >= 0", "null"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
}

#[test]
fn in_matches_same_type_elements_only() {
    for (text, want) in [
        ("s in ['x', 'abc']", "true"),
        ("s in ['x']", "false"),
        ("s in []", "false"),
        ("n in [4, 5]", "true"),
        ("n in [5.0]", "true"),
        ("z in [-0]", "true"),
        ("n in ['5']", "false"),
        ("s in [1, 2, true]", "false"),
        ("t in [true]", "true"),
        ("f in [true]", "false"),
        ("f in [false, 1]", "true"),
        ("o in ['abc', 1]", "false"),
        ("u in ['a']", "null"),
        ("u in []", "null"),
        // Elements are expressions; a missing element never matches.
        ("n in [z + 5]", "true"),
        ("n in [u, 5]", "true"),
        ("n in [u]", "false"),
        ("s in [u, coalesce(u, 'abc')]", "true"),
        ("n in [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 5]", "true"),
        ("n in [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]", "false"),
        ("z in [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, -0]", "true"),
        ("s in ['a','b','c','d','e','f','g','h','i','abc']", "true"),
        ("s in ['a','b','c','d','e','f','g','h','i','ab']", "false"),
        ("n in [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5, 5]", "true"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
    assert!(!m("u in ['a']") && !m("!(u in ['a'])"));
    assert!(m("!(n in ['5'])"), "known and equal to none: false");
}

#[test]
fn has_is_never_unknown() {
    for (text, want) in [
        ("has(n)", "true"),
        ("has(f)", "true"),
        ("has(e)", "true"),
        ("has(o)", "true"),
        ("has(u)", "false"),
        ("has(a.b.c)", "false"),
        ("!has(u)", "true"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
    // JSON null and non-finite numbers are missing.
    let odd = [("nan", Num(f64::NAN)), ("inf", Num(f64::INFINITY))];
    assert_eq!(ev("has(nan) || has(inf)", &odd), "false");
    assert_eq!(ev("inf > 0", &odd), "null");
}

#[test]
fn string_methods_need_strings() {
    for (text, want) in [
        ("s.startsWith('ab')", "true"),
        ("s.startsWith('b')", "false"),
        ("s.endsWith('bc')", "true"),
        ("s.endsWith('abcd')", "false"),
        ("s.contains('b')", "true"),
        ("s.contains('x')", "false"),
        ("s.contains('')", "true"),
        ("e.contains('')", "true"),
        ("'héllo'.contains('é')", "true"),
        ("s.contains(s)", "true"),
        ("n.contains('5')", "null"),
        ("u.startsWith('a')", "null"),
        ("s.startsWith(u)", "null"),
        ("s.endsWith(n)", "null"),
        ("o.contains('a')", "null"),
        ("!n.contains('5')", "null"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
}

#[test]
fn nested_paths_and_quoted_segments_name_fields() {
    let fields = [
        ("user.id", Num(42.0)),
        ("payload.`geo.ip`", Str("10.0.0.1")),
        ("`a.b`", Str("dotted")),
        ("a.b", Str("nested")),
        ("`in`", Bool(true)),
    ];
    assert_eq!(ev("user.id", &fields), "42");
    assert_eq!(ev("user . id + 1", &fields), "43");
    assert_eq!(ev("payload.`geo.ip`.startsWith('10.')", &fields), "true");
    assert_eq!(ev("`a.b`", &fields), "\"dotted\"");
    assert_eq!(ev("a.b", &fields), "\"nested\"");
    assert_eq!(ev("`a`.`b`", &fields), "\"nested\"");
    assert_eq!(ev("`in` && has(`user`.id)", &fields), "true");
    let ast = parse("payload.`geo.ip` == `a.b` || a.b == user.id.x || has(payload.`geo.ip`)")
        .expect("parses");
    let seg = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        ast.paths(),
        [
            seg(&["payload", "geo.ip"]),
            seg(&["a.b"]),
            seg(&["a", "b"]),
            seg(&["user", "id", "x"]),
        ]
    );
}

#[test]
fn arithmetic_gives_null_instead_of_nan_or_infinity() {
    for (text, want) in [
        ("n + 1", "6"),
        ("n - 7", "-2"),
        ("n * 2", "10"),
        ("n / 2", "2.5"),
        ("-n", "-5"),
        ("- -n", "5"),
        ("0.1 + 0.2", "0.30000000000000004"),
        ("n / z", "null"),
        ("z / z", "null"),
        ("1 / 0", "null"),
        ("-1 / 0", "null"),
        ("1e308 * 10", "null"),
        ("-1e308 - 1e308", "null"),
        ("z * -1", "0"),
        ("sqrt(-1)", "null"),
        ("sqrt(16)", "4"),
        ("ln(0)", "null"),
        ("ln(-1)", "null"),
        ("ln(1)", "0"),
        ("exp(0)", "1"),
        ("exp(1000)", "null"),
        ("pow(2, 10)", "1024"),
        ("pow(10, 400)", "null"),
        ("pow(0, -1)", "null"),
        ("pow(-8, 1 / 3)", "null"),
        ("pow(n, 0)", "1"),
        ("abs(-3.5)", "3.5"),
        ("round(2.5)", "3"),
        ("round(-2.5)", "-3"),
        ("round(2.4999)", "2"),
        ("round(-0.4)", "0"),
        ("round(0.49999999999999994)", "0"),
        ("min(3, n, 4)", "3"),
        ("max(3, n, 4)", "5"),
        ("min(n, -n)", "-5"),
        // Null in, null out; a non-number is null too.
        ("n + u", "null"),
        ("s + 1", "null"),
        ("t * 2", "null"),
        ("o - 1", "null"),
        ("-s", "null"),
        ("abs(u)", "null"),
        ("min(n, u)", "null"),
        ("max(n, s)", "null"),
        ("pow(u, 0)", "null"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
}

#[test]
fn coalesce_takes_the_first_non_null() {
    for (text, want) in [
        ("coalesce(u, n)", "5"),
        ("coalesce(n, u)", "5"),
        ("coalesce(u, missing, 7)", "7"),
        ("coalesce(u, missing)", "null"),
        ("coalesce(u, null)", "null"),
        ("coalesce(1 / z, 2)", "2"),
        ("coalesce(u, s)", "\"abc\""),
        ("coalesce(f, true)", "false"),
        ("coalesce(e, 'x')", "\"\""),
        // An object is present: it is taken, and an object as a result is null.
        ("coalesce(o, 1)", "null"),
        ("coalesce(u, 0) + 1", "1"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
}

#[test]
fn ternary_needs_a_known_condition() {
    for (text, want) in [
        ("t ? 1 : 2", "1"),
        ("f ? 1 : 2", "2"),
        ("u ? 1 : 2", "null"),
        ("n ? 1 : 2", "null"),
        ("n > 3 ? s : 'small'", "\"abc\""),
        ("n > 9 ? s : 'small'", "\"small\""),
        ("u > 3 ? 1 : 2", "null"),
        ("f ? 1 : t ? 2 : 3", "2"),
        ("t ? f ? 1 : 2 : 3", "2"),
        ("t ? null : 1", "null"),
        ("f ? u : n", "5"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
    assert!(m("t ? n > 1 : u"));
    assert!(!m("u ? true : true"));
}

#[test]
fn precedence_decides_the_result() {
    for (text, want) in [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("10 - 4 - 3", "3"),
        ("12 / 3 / 2", "2"),
        ("2 * 3 / 4", "1.5"),
        ("-n * 2", "-10"),
        ("-(n * 2) + 1", "-9"),
        ("!t || t", "true"),
        ("t || f && f", "true"),
        ("(t || f) && f", "false"),
        ("n + 1 > 5 && s == 'abc'", "true"),
        ("n > 1 ? 10 : 20 + 1", "10"),
        ("f || t ? 1 : 2", "1"),
    ] {
        assert_eq!(e(text), want, "{text}");
    }
}

#[test]
fn results_of_derived_expressions() {
    assert_eq!(e("s"), "\"abc\"");
    assert_eq!(e("o"), "null");
    assert_eq!(e("u"), "null");
    assert_eq!(e("n > 3"), "true");
    assert_eq!(e("'lit'"), "\"lit\"");
    assert_eq!(e("null"), "null");
    assert_eq!(e("t ? s : 'x'"), "\"abc\"");
}

#[test]
fn constant_expressions_are_folded() {
    let constant = |text: &str| {
        let compiled = parse(text)
            .expect("parses")
            .compile(|_| Ok(0))
            .expect("compiles");
        compiled.constant().map(|v| format!("{v:?}"))
    };
    assert_eq!(constant("1 + 2 * 3").as_deref(), Some("Num(7.0)"));
    assert_eq!(
        constant("'a' < 'b' && !false").as_deref(),
        Some("Bool(true)")
    );
    assert_eq!(
        constant("coalesce(null, 'x')").as_deref(),
        Some("Str(\"x\")")
    );
    assert_eq!(constant("1 / 0").as_deref(), Some("Null"));
    assert_eq!(constant("n + 1"), None);
    assert_eq!(constant("has(x) || true"), None);
    assert_eq!(Val::Num(1.0), Val::Num(1.0));
}

#[test]
fn filters_borrow_and_slices_work_as_fields() {
    let ast =
        parse("type in ['login', 'register'] && !user.name.startsWith('bot')").expect("parses");
    let compiled = ast
        .compile(|p| Ok(if p[0] == "type" { 0 } else { 1 }))
        .expect("compiles");
    let name = String::from("alice");
    assert!(compiled.eval_filter(&[Str("login"), Str(name.as_str())]));
    assert!(compiled.eval_filter(&vec![Str("register"), Str("bob")]));
    assert!(!compiled.eval_filter(&[Str("login"), Str("bot7")][..]));
    assert!(
        !compiled.eval_filter(&[Str("login")][..]),
        "slot beyond the end: missing"
    );
}

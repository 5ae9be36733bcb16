//! Error messages: position (line and column), what was expected, what is valid.

use super::super::{parse, parse_filter, ExprError, Value, MAX_HEIGHT, MAX_NESTING};
use super::error;

#[test]
fn syntax_errors_say_what_was_expected_and_where() {
    for (text, want) in [
        (
            "pow(amount, 2",
            "1:14: expected ')' after the arguments of pow, found end of input",
        ),
        (
            "min(a, b",
            "1:9: expected ',' or ')' after the arguments of min, found end of input",
        ),
        ("", "1:1: expected an expression, found end of input"),
        ("a &&", "1:5: expected an expression, found end of input"),
        ("(a", "1:3: expected ')', found end of input"),
        ("a b", "1:3: expected an operator or the end of the expression, found 'b'"),
        ("a ? b", "1:6: expected ':' of the '?' at 1:3, found end of input"),
        ("x in y", "1:6: expected '[' after 'in', found 'y'; 'in' takes a list such as [1, 2]"),
        ("x in [1 2]", "1:9: expected ',' or ']' in the list after 'in', found number 2"),
        ("[1, 2]", "1:1: expected an expression, found '['; a list [..] may only follow 'in'"),
        ("a.", "1:3: expected a method name after '.', found end of input; the methods are contains, endsWith and startsWith, and only a path has fields"),
        ("(a).b", "1:6: expected '(' after the method name b, found end of input"),
        ("`a`(1)", "1:4: expected an operator or the end of the expression, found '('; only functions and methods can be called"),
        ("a < b < c", "1:7: comparisons do not chain: write (a < b) && (b < c), or add parentheses"),
        ("a in [1] == true", "1:10: comparisons do not chain: write (a < b) && (b < c), or add parentheses"),
        ("a ) b", "1:3: expected an operator or the end of the expression, found ')'"),
        ("x > .5", "1:5: expected an expression, found '.'; write 0.5, not .5"),
        ("x in [1e300 1]", "1:13: expected ',' or ']' in the list after 'in', found number 1"),
        ("x in [1 1e300]", "1:9: expected ',' or ']' in the list after 'in', found number 1e300"),
    ] {
        assert_eq!(error(text), want, "{text}");
    }
}

#[test]
fn functions_and_methods_are_checked_when_parsing() {
    for (text, want) in [
        ("foo(a)", "1:1: unknown function 'foo'; the functions are abs, coalesce, exp, has, ln, max, min, pow, round, sqrt"),
        ("x || contains(a, 'b')", "1:6: unknown function 'contains'; the functions are abs, coalesce, exp, has, ln, max, min, pow, round, sqrt (contains is a method: write s.contains(t))"),
        ("a.abs()", "1:3: unknown method 'abs'; the methods are contains, endsWith, startsWith (abs is a function: write abs(x))"),
        ("a.size()", "1:3: unknown method 'size'; the methods are contains, endsWith, startsWith"),
        ("pow(a)", "1:1: pow takes 2 arguments, found 1"),
        ("pow(a, b, c)", "1:9: expected ')' after the arguments of pow, found ','"),
        ("abs()", "1:1: abs takes 1 argument, found 0"),
        ("min(a)", "1:1: min takes at least 2 arguments, found 1"),
        ("coalesce(a)", "1:1: coalesce takes at least 2 arguments, found 1"),
        ("a.contains()", "1:3: contains takes 1 argument, found 0"),
        ("has()", "1:1: has takes 1 argument (a field path), found 0"),
        ("has(a + 1)", "1:5: has takes a field path, e.g. has(user.id)"),
        ("has('a')", "1:5: has takes a field path, e.g. has(user.id)"),
    ] {
        assert_eq!(error(text), want, "{text}");
    }
}

#[test]
fn type_errors_point_at_the_operand() {
    for (text, want) in [
        ("a == null", "1:6: comparing with null is always unknown; test a field with has(x) or !has(x)"),
        ("null != a", "1:1: comparing with null is always unknown; test a field with has(x) or !has(x)"),
        ("a in [1, null]", "1:10: null in a list never matches; test a field with has(x)"),
        ("null in [1]", "1:1: comparing with null is always unknown; test a field with has(x) or !has(x)"),
        ("1 == '1'", "1:3: '==' compares a number with a string, which is always unknown"),
        ("a + 1 < 'x'", "1:7: '<' compares a number with a string, which is always unknown"),
        ("1 in ['a']", "1:7: this element is a string but the value before 'in' is a number: it never matches"),
        ("true < a", "1:1: '<' needs numbers or strings, found a boolean (booleans only compare with == and !=)"),
        ("'a' + 1", "1:1: '+' needs a number, found a string"),
        ("a + null", "1:5: '+' needs a number, found null, which is always unknown here; test a field with has(x)"),
        ("!1", "1:2: '!' needs a boolean, found a number"),
        ("-'a'", "1:2: '-' needs a number, found a string"),
        ("a && 1", "1:6: '&&' needs a boolean, found a number"),
        ("a > 1 || 'x'", "1:10: '||' needs a boolean, found a string"),
        ("1 ? a : b", "1:1: the condition of '?' needs a boolean, found a number"),
        ("abs('x')", "1:5: abs needs a number, found a string"),
        ("max(a, b > 1)", "1:8: max needs a number, found a boolean"),
        ("a.b.contains(1)", "1:14: the argument of contains needs a string, found a number"),
        ("(a > 1).contains('x')", "1:1: the receiver of contains needs a string, found a boolean"),
        ("coalesce(a, 1) + 'x'", "1:18: '+' needs a number, found a string"),
    ] {
        assert_eq!(error(text), want, "{text}");
    }
    assert_eq!(
        parse_filter("1 + 2").map_err(|e| e.to_string()),
        Err("1:1: a filter must be a condition (a boolean), found a number".into())
    );
    assert!(parse_filter("'x'").is_err() && parse_filter("null").is_err());
}

#[test]
fn multi_line_positions_count_lines_and_characters() {
    let text = "amount > 100 &&\n  (country == 'fr' ||\n   city.é < 3)";
    let e = parse(text).expect_err("é is not an identifier");
    assert_eq!((e.line, e.column, e.offset), (3, 9, 46));
    assert!(e.message.starts_with("unexpected character 'é'"), "{e}");
    assert_eq!(&text[e.offset..e.offset + 2], "é");

    let text = "a == 1 &&\n  (b > 2 ||\n   c <)";
    assert_eq!(error(text), "3:7: expected an expression, found ')'");
    let text = "max(\n  a,\n  b\n";
    assert_eq!(
        error(text),
        "3:4: expected ',' or ')' after the arguments of max, found end of input"
    );
    let text = "'ünïcödé' == a &&\n\tb ==";
    assert_eq!(
        error(text),
        "2:6: expected an expression, found end of input"
    );
}

#[test]
fn resolution_errors_point_at_the_first_use_of_the_path() {
    let ast = parse("a > 1 &&\n  unknown_feature * 2 > unknown_feature").expect("parses");
    let e = ast
        .compile(|p| {
            if p[0] == "a" {
                Ok(0)
            } else {
                Err(format!("unknown feature '{}'; the features are a", p[0]))
            }
        })
        .expect_err("unknown feature");
    assert_eq!(
        e.to_string(),
        "2:3: unknown feature 'unknown_feature'; the features are a"
    );
    assert_eq!(e.offset, 11);
    assert_eq!(e.pos(), ExprError::at(e.pos(), "").pos());
}

#[test]
fn nesting_is_limited_without_overflowing_the_stack() {
    let (height, nesting) = (MAX_HEIGHT as usize, MAX_NESTING as usize);
    let deep =
        |open: &str, close: &str, n: usize| format!("{}a{}", open.repeat(n), close.repeat(n));
    // At the limits: parses, prints, compiles and evaluates (on a test thread's stack).
    for text in [
        deep("(", ")", nesting - 1),
        deep("!", "", nesting - 1),
        deep("abs(", ")", nesting - 1),
        deep("a ? a : ", "", nesting - 1),
        format!("a{}", " || a".repeat(height - 1)),
        format!("a{}", " + a".repeat(height - 1)),
    ] {
        let ast = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", &text[..20]));
        assert_eq!(parse(&ast.to_string()).as_ref(), Ok(&ast));
        let compiled = ast.compile(|_| Ok(0)).expect("compiles");
        let _ = compiled.eval(&[Value::Bool(true)]);
    }
    for (text, limit) in [
        (deep("(", ")", nesting), nesting),
        (deep("!", "", nesting), nesting),
        (deep("abs(", ")", nesting), nesting),
        (deep("x in [", "]", nesting), nesting),
        (deep("a ? a : ", "", nesting), nesting),
        (format!("a{}", " || a".repeat(height)), height),
        (format!("a{}", " - a".repeat(height)), height),
        (deep("(", ")", 100_000), nesting),
        (deep("-", "", 100_000), nesting),
        (format!("a{}", " * a".repeat(100_000)), height),
    ] {
        let e = parse(&text).expect_err("too deep");
        let want = format!("expression nested too deeply (the limit is {limit} levels)");
        assert!(e.message.starts_with(&want), "{e}");
    }
    assert!(parse(&deep("[", "]", 100_000)).is_err());
}

//! Parsing: precedence and associativity, the canonical printed form, paths, comments.

use super::super::{parse, parse_filter, BinaryOp, Expr, Type};

fn same(a: &str, b: &str) {
    let (x, y) = (parse(a), parse(b));
    assert_eq!(x, y, "{a}  vs  {b}");
    assert!(x.is_ok(), "{a}: {x:?}");
}

fn canonical(text: &str) -> String {
    let ast = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let printed = ast.to_string();
    assert_eq!(parse(&printed).as_ref(), Ok(&ast), "{printed} reparses");
    printed
}

#[test]
fn operators_bind_by_precedence() {
    same("a || b && c", "a || (b && c)");
    same("a && b || c && d", "(a && b) || (c && d)");
    same("a || b || c", "(a || b) || c");
    same("!a && b", "(!a) && b");
    same("a == 1 && b < 2", "(a == 1) && (b < 2)");
    same("a + b * c == d", "(a + (b * c)) == d");
    same("a - b - c", "(a - b) - c");
    same("a / b * c", "(a / b) * c");
    same("-a * b", "(-a) * b");
    same("-a.b * c", "(-(a.b)) * c");
    same("!a.b.startsWith('x')", "!(a.b.startsWith('x'))");
    same("a ? b : c ? d : e", "a ? b : (c ? d : e)");
    same("a ? b ? c : d : e", "a ? (b ? c : d) : e");
    same("a || b ? c : d", "(a || b) ? c : d");
    same("x + 1 in [1, 2] && y", "((x + 1) in [1, 2]) && y");
    same("(((a)))", "a");
}

#[test]
fn printing_is_canonical_and_reads_back() {
    for (text, want) in [
        ("a||b&&c", "a || b && c"),
        ("(a||b)&&c", "(a || b) && c"),
        ("a-(b-c)", "a - (b - c)"),
        ("(a-b)-c", "a - b - c"),
        ("(a?b:c)?d:e", "(a ? b : c) ? d : e"),
        ("a?b:(c?d:e)", "a ? b : c ? d : e"),
        ("-(-x)", "--x"),
        ("!(!x)", "!!x"),
        ("(a == b) == c", "(a == b) == c"),
        ("(x in [1,2,]) != y", "(x in [1, 2]) != y"),
        ("(a ? s : t).contains('x')", "(a ? s : t).contains(\"x\")"),
        ("'it\\'s \"q\"\\n\\t\\u0001é'", r#""it's \"q\"\n\t\u0001é""#),
        (
            "1.50 + 1e3 + 1e20 + 0.1 + 2.5e-8",
            "1.5 + 1000 + 1e20 + 0.1 + 2.5e-8",
        ),
        ("007", "7"),
        ("`abc`.`a b`.`true`.`x.y`._1", "abc.`a b`.`true`.`x.y`._1"),
        ("has( a . b )", "has(a.b)"),
        ("coalesce(a,null)", "coalesce(a, null)"),
        ("a // trailing comment\n  && b", "a && b"),
        (
            "contains.contains.contains('x')",
            "contains.contains.contains(\"x\")",
        ),
        ("has", "has"),
        ("(a||b)&&!(c)", "(a || b) && !c"),
    ] {
        assert_eq!(canonical(text), want, "{text}");
    }
}

#[test]
fn methods_take_the_last_name_before_the_parenthesis() {
    let ast = parse("a.b.startsWith('x')").expect("parses");
    match ast.expr() {
        Expr::Method(_, receiver, _) => assert_eq!(receiver.to_string(), "a.b"),
        other => panic!("not a method call: {other:?}"),
    }
    let ast = parse("pow.min + has.abs").expect("parses");
    assert_eq!(
        ast.paths().len(),
        2,
        "function names are fine as field names"
    );
}

#[test]
fn paths_are_listed_once_in_order_of_appearance() {
    let ast =
        parse("b > 1 && has(a) && (b < 9 || c.d in [a, e]) ? x : coalesce(y, x)").expect("parses");
    let names: Vec<String> = ast.paths().iter().map(|p| p.join(".")).collect();
    assert_eq!(names, ["b", "a", "c.d", "e", "x", "y"]);
    assert!(parse("1 + 2").expect("parses").paths().is_empty());
}

#[test]
fn static_types_are_inferred() {
    let ty = |t: &str| parse(t).expect("parses").ty();
    assert_eq!(ty("a"), Type::Any);
    assert_eq!(ty("a > 1"), Type::Bool);
    assert_eq!(ty("a + 1"), Type::Num);
    assert_eq!(ty("'x'"), Type::Str);
    assert_eq!(ty("null"), Type::Null);
    assert_eq!(ty("c ? 1 : null"), Type::Num);
    assert_eq!(ty("c ? 1 : 'x'"), Type::Any);
    assert_eq!(ty("coalesce(a, 0)"), Type::Any);
    assert_eq!(ty("coalesce(a + 1, 0)"), Type::Num);
    assert_eq!(ty("has(a)"), Type::Bool);
    assert!(parse_filter("a").is_ok());
    assert!(parse_filter("a.contains('x') || b").is_ok());
    assert!(parse_filter("c ? a : b").is_ok());
}

#[test]
fn operator_metadata_is_consistent() {
    for op in [BinaryOp::Eq, BinaryOp::Ge, BinaryOp::Lt] {
        assert!(op.is_comparison(), "{op:?}");
    }
    assert!(!BinaryOp::Add.is_comparison());
    for f in super::super::Func::ALL {
        assert_eq!(super::super::Func::from_name(f.name()), Some(f));
    }
}

#[test]
fn wide_expressions_parse_and_compile_in_linear_time() {
    let names: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
    let text = format!("x in [{}]", names.join(", "));
    let ast = parse(&text).expect("parses");
    assert_eq!(ast.paths().len(), 20_001);
    let mut next = 0;
    let compiled = ast
        .compile(|_| {
            next += 1;
            Ok(next - 1)
        })
        .expect("compiles");
    let values = [super::super::Value::Num(1.0)];
    let matched = compiled.eval(&values);
    assert_eq!(
        matched,
        super::super::Val::Bool(false),
        "x is 1, the elements missing"
    );
}

#[test]
fn compiled_expressions_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<super::super::Compiled>();
    shareable::<super::super::Ast>();
}

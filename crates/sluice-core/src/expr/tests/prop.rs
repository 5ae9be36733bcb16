//! Property tests: no input makes parsing, compiling or evaluating panic; printed ASTs parse
//! back to themselves; the compiled evaluator agrees with the reference evaluator.
//!
//! Random ASTs come from a seeded generator (the seed is what proptest reports on failure),
//! well-typed by construction so that the parser accepts their printed form.

use proptest::prelude::*;

use super::super::{
    parse, Ast, BinaryOp, Expr, Func, Lit, Method, Path, Pos, Type, UnaryOp, Value,
};
use super::reference::{self, R};

/// The paths random expressions read.
const PATHS: [&[&str]; 7] = [
    &["a"],
    &["b"],
    &["n"],
    &["s"],
    &["x", "y"],
    &["geo.ip"],
    &["p", "true"],
];
const NUMS: [f64; 10] = [0.0, 1.0, 2.0, 0.5, 3.0, 5.0, 100.0, 1e300, 1e-7, 0.1];
const STRS: [&str; 8] = ["", "a", "ab", "abc", "b", "é", "\"q\n\\", "a\u{1}"];

/// A small deterministic PRNG (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn path(segments: &[&str]) -> Path {
    Path {
        segments: segments.iter().map(|s| s.to_string()).collect(),
        pos: Pos::START,
    }
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

/// A random expression whose static type is `want` or `Any` (`want` is never `Null`).
fn gen(rng: &mut Rng, want: Type, depth: u32) -> Expr {
    let want = if want == Type::Any {
        rng.pick(&[Type::Bool, Type::Num, Type::Str, Type::Any])
    } else {
        want
    };
    if depth == 0 || rng.below(4) == 0 {
        return match (rng.below(2), want) {
            (0, _) | (_, Type::Any) => Expr::Path(path(rng.pick(&PATHS))),
            (_, Type::Bool) => Expr::Lit(Lit::Bool(rng.below(2) == 0)),
            (_, Type::Str) => Expr::Lit(Lit::Str(rng.pick(&STRS).to_owned())),
            _ => Expr::Lit(Lit::Num(rng.pick(&NUMS))),
        };
    }
    let d = depth - 1;
    // Conditionals and coalesce fit every type.
    match rng.below(8) {
        0 => {
            let (a, b) = (nullable(rng, want, d), gen(rng, want, d));
            let (a, b) = if rng.below(2) == 0 { (a, b) } else { (b, a) };
            return Expr::Cond(boxed(gen(rng, Type::Bool, d)), boxed(a), boxed(b));
        }
        1 => {
            let mut args: Vec<Expr> = (0..1 + rng.below(3))
                .map(|_| nullable(rng, want, d))
                .collect();
            let at = rng.below(args.len() + 1);
            args.insert(at, gen(rng, want, d));
            return Expr::Call(Func::Coalesce, args);
        }
        _ => {}
    }
    match want {
        Type::Bool => match rng.below(6) {
            0 => Expr::Unary(UnaryOp::Not, boxed(gen(rng, Type::Bool, d))),
            1 => {
                let op = rng.pick(&[BinaryOp::And, BinaryOp::Or]);
                Expr::Binary(
                    op,
                    boxed(gen(rng, Type::Bool, d)),
                    boxed(gen(rng, Type::Bool, d)),
                )
            }
            2 => {
                let (op, ty) = match rng.below(3) {
                    0 => (rng.pick(&[BinaryOp::Eq, BinaryOp::Ne]), Type::Bool),
                    _ => (
                        rng.pick(&[
                            BinaryOp::Eq,
                            BinaryOp::Ne,
                            BinaryOp::Lt,
                            BinaryOp::Le,
                            BinaryOp::Gt,
                            BinaryOp::Ge,
                        ]),
                        rng.pick(&[Type::Num, Type::Str]),
                    ),
                };
                Expr::Binary(op, boxed(gen(rng, ty, d)), boxed(gen(rng, ty, d)))
            }
            3 => {
                // A needle of a known type needs elements of that type (or fields); a field
                // can be looked for in a list of mixed types.
                let ty = rng.pick(&[Type::Num, Type::Str, Type::Bool, Type::Any]);
                let needle = match ty {
                    Type::Any => Expr::Path(path(rng.pick(&PATHS))),
                    ty => gen(rng, ty, d),
                };
                let list = (0..rng.below(12)).map(|_| gen(rng, ty, d)).collect();
                Expr::In(boxed(needle), list)
            }
            4 => Expr::Has(path(rng.pick(&PATHS))),
            _ => {
                let m = rng.pick(&[Method::StartsWith, Method::EndsWith, Method::Contains]);
                Expr::Method(
                    m,
                    boxed(gen(rng, Type::Str, d)),
                    boxed(gen(rng, Type::Str, d)),
                )
            }
        },
        Type::Num => match rng.below(4) {
            0 => Expr::Unary(UnaryOp::Neg, boxed(gen(rng, Type::Num, d))),
            1 => {
                let op = rng.pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div]);
                Expr::Binary(
                    op,
                    boxed(gen(rng, Type::Num, d)),
                    boxed(gen(rng, Type::Num, d)),
                )
            }
            _ => {
                let func = rng.pick(&[
                    Func::Abs,
                    Func::Ln,
                    Func::Exp,
                    Func::Sqrt,
                    Func::Round,
                    Func::Pow,
                    Func::Min,
                    Func::Max,
                ]);
                let n = match func.arity() {
                    (min, Some(max)) if min == max => min,
                    (min, _) => min + rng.below(3),
                };
                Expr::Call(func, (0..n).map(|_| gen(rng, Type::Num, d)).collect())
            }
        },
        _ => Expr::Path(path(rng.pick(&PATHS))),
    }
}

/// Like [`gen`], but sometimes the `null` literal (for `?:` branches and `coalesce`).
fn nullable(rng: &mut Rng, want: Type, depth: u32) -> Expr {
    if rng.below(5) == 0 {
        Expr::Lit(Lit::Null)
    } else {
        gen(rng, want, depth)
    }
}

/// A random value for a field.
fn value(rng: &mut Rng) -> Value<'static> {
    match rng.below(6) {
        0 => Value::Missing,
        1 => Value::Num(rng.pick(&[0.0, -0.0, 1.0, 2.0, 0.5, -3.0, 5.0, 1e300, -1e-7, 100.0])),
        2 => Value::Str(rng.pick(&STRS)),
        3 => Value::Bool(rng.below(2) == 0),
        4 => Value::Other,
        _ => Value::Num(rng.pick(&[f64::NAN, f64::INFINITY, 7.0])),
    }
}

fn to_r(v: Value<'_>) -> R {
    match v {
        Value::Missing => R::Null,
        Value::Num(n) => R::Num(n),
        Value::Str(s) => R::Str(s.to_owned()),
        Value::Bool(b) => R::Bool(b),
        Value::Other => R::Obj,
    }
}

/// Compiles `ast` with paths in slots by [`PATHS`] order (others after), evaluates it over
/// `rounds` random events and checks every result against the reference evaluator.
fn agrees_with_reference(ast: &Ast, rng: &mut Rng, rounds: usize) -> Result<(), TestCaseError> {
    let mut names: Vec<Vec<String>> = PATHS
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    let compiled = ast
        .compile(|p| {
            if !names.iter().any(|q| q == p) {
                names.push(p.to_vec());
            }
            Ok(names.iter().position(|q| q == p).expect("just added") as u32)
        })
        .expect("resolves");
    for _ in 0..rounds {
        let values: Vec<Value<'static>> = names.iter().map(|_| value(rng)).collect();
        let field = |p: &[String]| {
            names
                .iter()
                .position(|q| q == p)
                .map_or(R::Null, |i| to_r(values[i]))
        };
        let want = reference::eval(ast.expr(), &field).output();
        let got = R::of(compiled.eval(&values));
        prop_assert_eq!(&got, &want, "{} over {:?}", ast, values);
        prop_assert_eq!(compiled.eval_filter(&values), want == R::Bool(true));
        if let R::Num(n) = got {
            prop_assert!(n.is_finite() && !(n == 0.0 && n.is_sign_negative()));
        }
    }
    Ok(())
}

/// Parses whatever `text` is; when it parses, prints, reparses, compiles and evaluates.
fn survives(text: &str, seed: u64) -> Result<(), TestCaseError> {
    let Ok(ast) = parse(text) else {
        return Ok(());
    };
    let printed = ast.to_string();
    let reparsed = parse(&printed);
    prop_assert_eq!(
        reparsed.as_ref(),
        Ok(&ast),
        "{:?} printed as {}",
        text,
        printed
    );
    // A resolver that refuses some paths must give an error, not a panic.
    let refused = ast.compile(|p| match p[0].starts_with('z') {
        true => Err("no such field".into()),
        false => Ok(0),
    });
    if let Err(e) = refused {
        prop_assert!(e.offset <= text.len() && text.is_char_boundary(e.offset));
    }
    agrees_with_reference(&ast, &mut Rng(seed), 4)
}

/// Operands, operators and other tokens, for token soups.
const OPERANDS: [&str; 16] = [
    "a",
    "b.c",
    "`x.y`",
    "n",
    "1",
    "2.5",
    "1e3",
    "0",
    "'s'",
    "\"t\"",
    "''",
    "true",
    "false",
    "null",
    "has(a)",
    "s.contains('x')",
];
const OPERATORS: [&str; 16] = [
    "||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "in", "?", ":", ",",
];
const OTHERS: [&str; 26] = [
    "(",
    ")",
    "[",
    "]",
    "!",
    "-",
    ".",
    "abs(",
    "pow(",
    "min(",
    "coalesce(",
    "round(",
    "contains(",
    ".startsWith(",
    "has(",
    " ",
    "\n",
    "//c\n",
    "`",
    "'",
    "\"",
    "\\",
    "=",
    "%",
    "é",
    "\u{0}",
];

/// A token soup: mostly operands and operators in turn, with brackets and junk mixed in.
fn soup(rng: &mut Rng) -> String {
    let mut text = String::new();
    for i in 0..1 + rng.below(16) {
        let token = match rng.below(10) {
            0..=2 => rng.pick(&OTHERS),
            _ if i % 2 == 0 => rng.pick(&OPERANDS),
            _ => rng.pick(&OPERATORS),
        };
        text.push_str(token);
        if rng.below(2) == 0 {
            text.push(' ');
        }
    }
    text
}

/// A valid expression's text with a few random cuts, insertions and duplications.
fn mutated(rng: &mut Rng) -> String {
    let mut text = gen(rng, Type::Any, 4).to_string();
    for _ in 0..1 + rng.below(3) {
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        let (x, y) = (rng.pick(&bounds), rng.pick(&bounds));
        let (from, to) = (x.min(y), x.max(y));
        match rng.below(3) {
            0 => text.replace_range(from..to, ""),
            1 => text.insert_str(from, rng.pick(&OTHERS)),
            _ => {
                let piece = text[from..to].to_owned();
                text.insert_str(to, &piece);
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), seed in any::<u64>()) {
        survives(&text, seed)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        survives(&String::from_utf8_lossy(&bytes), 1)?;
    }

    #[test]
    fn token_soups_never_panic(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        survives(&soup(&mut rng), seed)?;
    }

    #[test]
    fn mutated_expressions_never_panic(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        survives(&mutated(&mut rng), seed)?;
    }

    #[test]
    fn printed_asts_parse_back_to_themselves(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let want = rng.pick(&[Type::Bool, Type::Num, Type::Str, Type::Any]);
        let expr = gen(&mut rng, want, 5);
        let printed = expr.to_string();
        let ast = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(ast.expr(), &expr, "{}", printed);
        prop_assert_eq!(ast.to_string(), printed);
    }

    #[test]
    fn compiled_evaluation_agrees_with_the_reference(seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let want = rng.pick(&[Type::Bool, Type::Num, Type::Str, Type::Any]);
        let expr = gen(&mut rng, want, 5);
        let ast = parse(&expr.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        agrees_with_reference(&ast, &mut rng, 16)?;
    }
}

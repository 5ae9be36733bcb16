//! Deterministic synthetic data behind `sluice gen`: flat transactions (this module, the
//! default) and nested multi-type events ([`nested`], `--kind nested`).
//!
//! The output depends only on [`GenOptions`]: the generator uses its own PRNG
//! (SplitMix64 seeding xoshiro256**) and integer arithmetic only — no floating
//! point, no hash-map iteration order, no platform-dependent formatting — so a
//! given set of options yields the same bytes on every platform, forever.
//!
//! Shape of the data:
//! - users are Zipf-distributed (exponent 1.0) over `users` ids; which user id
//!   is the hottest is scrambled by the seed;
//! - merchants (`max(1, users / 10)` ids) are Zipf-distributed the same way;
//! - every user has 1–3 usual devices derived by hashing (user, seed); about 3%
//!   of transactions use a random "foreign" device instead;
//! - amounts are integer cents from a piecewise, log-normal-like table
//!   (0.01 to 5000.00, about 92% under 200.00);
//! - event times cover `days` days from `start_ms`, non-decreasing in
//!   generation order with same-timestamp bursts (~5% reuse the previous ts),
//!   then optionally lowered by up to `disorder_ms` each (arrival disorder).

pub mod nested;

use std::io::{self, Write};

pub use nested::write_nested;

/// What `sluice gen` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GenKind {
    /// Flat transactions (`event_id`, `user_id`, `device_id`, `merchant_id`, `amount`, `ts`).
    #[default]
    Transactions,
    /// Nested logins, transactions and registers (`user.id`, `device.id`, `payload.amount`,
    /// ...); CSV flattens them into dotted headers (`user.id`).
    Nested,
}

/// Writes `opts.events` events of `kind` to `out`; returns the number written.
pub fn write_events(kind: GenKind, opts: &GenOptions, out: &mut dyn Write) -> io::Result<u64> {
    match kind {
        GenKind::Transactions => write_transactions(opts, out),
        GenKind::Nested => write_nested(opts, out),
    }
}

/// Output format of generated events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    /// One compact JSON object per line.
    Jsonl,
    /// A header line `event_id,user_id,device_id,merchant_id,amount,ts`, then one row per event.
    Csv,
}

/// What `sluice gen` generates. All fields public.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Number of transactions to generate.
    pub events: u64,
    /// Number of distinct user ids (`u0` .. `u{users-1}`); 0 is treated as 1.
    pub users: u64,
    /// Span of event time in days starting at `start_ms`; 0 is treated as 1.
    pub days: u64,
    /// PRNG seed; the output is a pure function of all options including this.
    pub seed: u64,
    /// Maximum amount by which an event's time is lowered below generation
    /// order; 0 means event times are non-decreasing in output order.
    pub disorder_ms: u64,
    /// Event time (epoch milliseconds) of the first event before disorder;
    /// the CLI default is 1_767_225_600_000 (2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Output format.
    pub format: GenFormat,
}

/// Writes `opts.events` transactions to `out`; returns the number written.
///
/// Output is buffered internally (64 KiB chunks) and `out` is flushed at the
/// end, so an unbuffered writer is fine.
pub fn write_transactions(opts: &GenOptions, out: &mut dyn Write) -> io::Result<u64> {
    let mut gen = Generator::new(opts);
    let header = b"event_id,user_id,device_id,merchant_id,amount,ts\n";
    write_chunked(opts, header, out, |i, buf| {
        let tx = gen.next_tx(i);
        match opts.format {
            GenFormat::Jsonl => tx.write_jsonl(buf),
            GenFormat::Csv => tx.write_csv(buf),
        }
    })
}

/// Writes `opts.events` events, each appended to a buffer by `event(index, buffer)`, after
/// `csv_header` for CSV output, in chunks of [`CHUNK`] bytes; flushes `out` at the end.
pub(crate) fn write_chunked(
    opts: &GenOptions,
    csv_header: &[u8],
    out: &mut dyn Write,
    mut event: impl FnMut(u64, &mut Vec<u8>),
) -> io::Result<u64> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 1024);
    if opts.format == GenFormat::Csv {
        buf.extend_from_slice(csv_header);
    }
    for i in 0..opts.events {
        event(i, &mut buf);
        if buf.len() >= CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(opts.events)
}

/// Size of the internal output chunk.
const CHUNK: usize = 1 << 16;
const MS_PER_DAY: u64 = 86_400_000;
/// Scale of the integer Zipf weights: weight(rank k, 0-based) = SCALE / (k + 1).
const ZIPF_SCALE: u64 = 1 << 40;
/// Percent of transactions made from a foreign device.
const FOREIGN_DEVICE_PCT: u64 = 3;
/// One in this many events reuses the previous event's exact timestamp.
const BURST_ONE_IN: u64 = 20;
/// Amount buckets in cents: (low inclusive, high exclusive, weight in percent).
const AMOUNT_BUCKETS: [(u64, u64, u64); 9] = [
    (1, 100, 8),
    (100, 500, 15),
    (500, 2_000, 25),
    (2_000, 5_000, 22),
    (5_000, 10_000, 14),
    (10_000, 20_000, 8),
    (20_000, 50_000, 5),
    (50_000, 100_000, 2),
    (100_000, 500_001, 1),
];

/// SplitMix64 step: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix64(*state)
}

/// SplitMix64 finaliser, used as a stateless 64-bit hash.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** generator.
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, n)` (multiply-shift; `n == 0` yields 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, n]`.
    fn upto(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * (u128::from(n) + 1)) >> 64) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zipf (exponent 1) sampler over `n` ids with a seed-dependent bijection
/// from rank to id, so that the hottest id differs between seeds.
struct Zipf {
    /// `cum[k]` = sum of weights of ranks `0..=k`.
    cum: Vec<u64>,
    n: u64,
    mul: u64,
    add: u64,
}

impl Zipf {
    fn new(n: u64, salt: u64) -> Self {
        let n = n.max(1);
        let mut cum = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut total = 0u64;
        for k in 0..n {
            // Never 0 (ranks beyond 2^40 still get weight 1), never overflows for
            // realistic n: the sum is about 2^40 * ln(n).
            total = total.saturating_add((ZIPF_SCALE / (k + 1)).max(1));
            cum.push(total);
        }
        // Affine bijection rank -> (mul * rank + add) mod n with gcd(mul, n) = 1.
        let mut h = mix64(salt);
        let mut mul = 1 + h % n;
        while n > 1 && gcd(mul, n) != 1 {
            h = mix64(h);
            mul = 1 + h % n;
        }
        let add = mix64(h ^ 0xA5A5_A5A5_A5A5_A5A5) % n;
        Zipf { cum, n, mul, add }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let total = self.cum.last().copied().unwrap_or(1);
        let r = rng.below(total);
        let rank = self.cum.partition_point(|&c| c <= r) as u64;
        ((u128::from(self.mul) * u128::from(rank) + u128::from(self.add)) % u128::from(self.n))
            as u64
    }
}

/// One generated transaction (numeric ids; prefixes are added on output).
struct Tx {
    index: u64,
    user: u64,
    device: u64,
    merchant: u64,
    cents: u64,
    ts: i64,
}

impl Tx {
    fn write_jsonl(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"event_id\":\"e");
        push_u64(buf, self.index);
        buf.extend_from_slice(b"\",\"user_id\":\"u");
        push_u64(buf, self.user);
        buf.extend_from_slice(b"\",\"device_id\":\"d");
        push_u64(buf, self.device);
        buf.extend_from_slice(b"\",\"merchant_id\":\"m");
        push_u64(buf, self.merchant);
        buf.extend_from_slice(b"\",\"amount\":");
        push_cents(buf, self.cents);
        buf.extend_from_slice(b",\"ts\":");
        push_i64(buf, self.ts);
        buf.extend_from_slice(b"}\n");
    }

    fn write_csv(&self, buf: &mut Vec<u8>) {
        buf.push(b'e');
        push_u64(buf, self.index);
        buf.extend_from_slice(b",u");
        push_u64(buf, self.user);
        buf.extend_from_slice(b",d");
        push_u64(buf, self.device);
        buf.extend_from_slice(b",m");
        push_u64(buf, self.merchant);
        buf.push(b',');
        push_cents(buf, self.cents);
        buf.push(b',');
        push_i64(buf, self.ts);
        buf.push(b'\n');
    }
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// Writes integer cents as `units.cc` (always exactly two decimals).
fn push_cents(buf: &mut Vec<u8>, cents: u64) {
    push_u64(buf, cents / 100);
    let c = (cents % 100) as u8;
    buf.push(b'.');
    buf.push(b'0' + c / 10);
    buf.push(b'0' + c % 10);
}

/// Generator state carried from one event to the next.
struct Generator {
    rng: Rng,
    users: Zipf,
    merchants: Zipf,
    seed: u64,
    /// Size of the device id space (usual and foreign devices).
    device_space: u64,
    /// Event-time span in milliseconds.
    span: u64,
    events: u64,
    start_ms: i64,
    disorder_ms: u64,
    /// Offset from `start_ms` of the previous event (before disorder).
    prev_off: u64,
}

impl Generator {
    fn new(opts: &GenOptions) -> Self {
        let users = opts.users.max(1);
        let seed = opts.seed;
        Generator {
            rng: Rng::new(seed),
            users: Zipf::new(users, seed ^ 0x5553_4552_5553_4552),
            merchants: Zipf::new((users / 10).max(1), seed ^ 0x4D45_5243_4841_4E54),
            seed,
            device_space: users.saturating_mul(10).max(1_000),
            span: opts.days.max(1).saturating_mul(MS_PER_DAY),
            events: opts.events,
            start_ms: opts.start_ms,
            disorder_ms: opts.disorder_ms,
            prev_off: 0,
        }
    }

    /// Hash of (seed, user, salt) for per-user derived attributes.
    fn user_hash(&self, user: u64, salt: u64) -> u64 {
        mix64(mix64(self.seed ^ 0xD1B5_4A32_D192_ED03).wrapping_add(user) ^ salt)
    }

    fn device_for(&mut self, user: u64) -> u64 {
        if self.rng.below(100) < FOREIGN_DEVICE_PCT {
            return self.rng.below(self.device_space);
        }
        // 50% of users have 1 usual device, 35% have 2, 15% have 3.
        let h = self.user_hash(user, 0) % 100;
        let count = if h < 50 {
            1
        } else if h < 85 {
            2
        } else {
            3
        };
        // The first device is the primary one (70% of usage when there are several).
        let slot = if count == 1 {
            0
        } else {
            let r = self.rng.below(100);
            if r < 70 {
                0
            } else {
                1 + (r - 70) % (count - 1)
            }
        };
        self.user_hash(user, slot + 1) % self.device_space
    }

    fn amount_cents(&mut self) -> u64 {
        let mut r = self.rng.below(100);
        for &(lo, hi, w) in &AMOUNT_BUCKETS {
            if r < w {
                // Min of two uniforms: density decreasing within the bucket.
                let width = hi - lo;
                let a = self.rng.below(width);
                let b = self.rng.below(width);
                return lo + a.min(b);
            }
            r -= w;
        }
        1
    }

    /// Event-time offset from `start_ms` before disorder; non-decreasing in `i`.
    fn time_offset(&mut self, i: u64) -> u64 {
        if i == 0 {
            return 0;
        }
        if self.rng.below(BURST_ONE_IN) == 0 {
            return self.prev_off;
        }
        let n = u128::from(self.events.max(1));
        let span = u128::from(self.span);
        let lo = (span * u128::from(i) / n) as u64;
        let hi = (span * (u128::from(i) + 1) / n) as u64;
        let cand = lo + self.rng.below(hi - lo);
        let off = cand.max(self.prev_off);
        self.prev_off = off;
        off
    }

    /// Event time of event `index`: its offset from `start_ms`, lowered by the disorder.
    fn event_time(&mut self, index: u64) -> i64 {
        let off = self.time_offset(index);
        let ts = self.start_ms.saturating_add_unsigned(off);
        if self.disorder_ms > 0 {
            ts.saturating_sub_unsigned(self.rng.upto(self.disorder_ms))
        } else {
            ts
        }
    }

    fn next_tx(&mut self, index: u64) -> Tx {
        let user = self.users.sample(&mut self.rng);
        let device = self.device_for(user);
        let merchant = self.merchants.sample(&mut self.rng);
        let cents = self.amount_cents();
        let ts = self.event_time(index);
        Tx {
            index,
            user,
            device,
            merchant,
            cents,
            ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_767_225_600_000;

    fn opts(events: u64, seed: u64, disorder_ms: u64, format: GenFormat) -> GenOptions {
        GenOptions {
            events,
            users: 1_000,
            days: 7,
            seed,
            disorder_ms,
            start_ms: START,
            format,
        }
    }

    fn gen_bytes(o: &GenOptions) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_transactions(o, &mut out).expect("write to Vec");
        assert_eq!(n, o.events);
        out
    }

    fn gen_string(o: &GenOptions) -> String {
        String::from_utf8(gen_bytes(o)).expect("utf8")
    }

    fn parse_lines(s: &str) -> Vec<serde_json::Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    fn ts_of(v: &serde_json::Value) -> i64 {
        v["ts"].as_i64().expect("ts is an integer")
    }

    #[test]
    fn same_options_same_bytes() {
        for format in [GenFormat::Jsonl, GenFormat::Csv] {
            let o = opts(5_000, 42, 250, format);
            assert_eq!(gen_bytes(&o), gen_bytes(&o));
        }
    }

    #[test]
    fn golden_prefix_is_stable() {
        // Pins the exact output so that any change to the generator is noticed.
        let s = gen_string(&GenOptions {
            events: 3,
            users: 100_000,
            days: 7,
            seed: 42,
            disorder_ms: 0,
            start_ms: START,
            format: GenFormat::Jsonl,
        });
        assert_eq!(s, GOLDEN);
    }

    const GOLDEN: &str = concat!(
        r#"{"event_id":"e0","user_id":"u67914","device_id":"d779601","merchant_id":"m9760","amount":3877.04,"ts":1767225600000}"#,
        "\n",
        r#"{"event_id":"e1","user_id":"u70678","device_id":"d654039","merchant_id":"m4616","amount":28.72,"ts":1767570567828}"#,
        "\n",
        r#"{"event_id":"e2","user_id":"u110","device_id":"d959345","merchant_id":"m7434","amount":54.64,"ts":1767750166159}"#,
        "\n",
    );

    #[test]
    fn different_seeds_differ() {
        let a = gen_bytes(&opts(1_000, 1, 0, GenFormat::Jsonl));
        let b = gen_bytes(&opts(1_000, 2, 0, GenFormat::Jsonl));
        assert_ne!(a, b);
    }

    #[test]
    fn event_count_and_ids() {
        let s = gen_string(&opts(1_234, 7, 0, GenFormat::Jsonl));
        let rows = parse_lines(&s);
        assert_eq!(rows.len(), 1_234);
        for (i, v) in rows.iter().enumerate() {
            assert_eq!(v["event_id"].as_str(), Some(format!("e{i}").as_str()));
        }
        assert_eq!(gen_bytes(&opts(0, 7, 0, GenFormat::Jsonl)).len(), 0);
    }

    #[test]
    fn jsonl_fields_and_types() {
        let s = gen_string(&opts(3_000, 9, 100, GenFormat::Jsonl));
        for line in s.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
            let obj = v.as_object().expect("object");
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            let mut expected = vec![
                "amount",
                "device_id",
                "event_id",
                "merchant_id",
                "ts",
                "user_id",
            ];
            let mut got = keys.clone();
            got.sort_unstable();
            expected.sort_unstable();
            assert_eq!(got, expected, "{line}");
            for (field, prefix) in [
                ("event_id", 'e'),
                ("user_id", 'u'),
                ("device_id", 'd'),
                ("merchant_id", 'm'),
            ] {
                let id = obj[field].as_str().expect("string id");
                assert!(id.starts_with(prefix), "{line}");
                assert!(id[1..].parse::<u64>().is_ok(), "{line}");
            }
            let user: u64 = obj["user_id"].as_str().expect("user")[1..]
                .parse()
                .expect("num");
            assert!(user < 1_000);
            let merchant: u64 = obj["merchant_id"].as_str().expect("m")[1..]
                .parse()
                .expect("num");
            assert!(merchant < 100);
            assert!(obj["amount"].is_f64(), "{line}");
            assert!(obj["ts"].is_i64(), "{line}");
            // Field order as documented.
            let order = [
                "\"event_id\"",
                "\"user_id\"",
                "\"device_id\"",
                "\"merchant_id\"",
                "\"amount\"",
                "\"ts\"",
            ];
            let pos: Vec<usize> = order.iter().map(|k| line.find(k).expect("key")).collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "{line}");
        }
    }

    #[test]
    fn amounts_have_two_decimals_and_range() {
        let s = gen_string(&opts(20_000, 3, 0, GenFormat::Csv));
        let mut under_200 = 0usize;
        let mut rows = 0usize;
        for line in s.lines().skip(1) {
            let amount = line.split(',').nth(4).expect("amount column");
            let (units, frac) = amount.split_once('.').expect("decimal point");
            assert_eq!(frac.len(), 2, "{amount}");
            assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{amount}");
            assert!(
                !units.is_empty() && units.bytes().all(|b| b.is_ascii_digit()),
                "{amount}"
            );
            let cents: u64 =
                units.parse::<u64>().expect("units") * 100 + frac.parse::<u64>().expect("frac");
            assert!((1..=500_000).contains(&cents), "{amount}");
            if cents < 20_000 {
                under_200 += 1;
            }
            rows += 1;
        }
        assert!(
            under_200 * 100 > rows * 85,
            "{under_200} of {rows} under 200"
        );
        // JSONL prints the same two-decimal text.
        let j = gen_string(&opts(2_000, 3, 0, GenFormat::Jsonl));
        for line in j.lines() {
            let rest = &line[line.find("\"amount\":").expect("amount") + 9..];
            let amount = &rest[..rest.find(',').expect("comma")];
            let (_, frac) = amount.split_once('.').expect("decimal point");
            assert_eq!(frac.len(), 2, "{line}");
        }
    }

    #[test]
    fn no_disorder_is_monotone_with_bursts() {
        let o = opts(50_000, 11, 0, GenFormat::Jsonl);
        let rows = parse_lines(&gen_string(&o));
        let ts: Vec<i64> = rows.iter().map(ts_of).collect();
        assert_eq!(ts[0], START);
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        let repeats = ts.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(repeats > 50_000 / 40, "repeats {repeats}");
        assert!(repeats < 50_000 / 10, "repeats {repeats}");
        let last = *ts.last().expect("non-empty");
        assert!(last < START + 7 * 86_400_000);
        assert!(last > START + 6 * 86_400_000, "spread over the whole span");
    }

    #[test]
    fn disorder_is_bounded() {
        let d = 5_000u64;
        let o = opts(50_000, 12, d, GenFormat::Jsonl);
        let rows = parse_lines(&gen_string(&o));
        let mut max_seen = i64::MIN;
        let mut out_of_order = 0usize;
        for v in &rows {
            let t = ts_of(v);
            assert!(t >= START - d as i64);
            if max_seen != i64::MIN {
                assert!(t >= max_seen - d as i64, "{t} vs max {max_seen}");
                if t < max_seen {
                    out_of_order += 1;
                }
            }
            max_seen = max_seen.max(t);
        }
        assert!(out_of_order > 1_000, "actually disordered: {out_of_order}");
    }

    #[test]
    fn csv_header_and_rows() {
        let s = gen_string(&opts(777, 5, 10, GenFormat::Csv));
        let mut lines = s.lines();
        assert_eq!(
            lines.next(),
            Some("event_id,user_id,device_id,merchant_id,amount,ts")
        );
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 777);
        for (i, row) in rows.iter().enumerate() {
            let cols: Vec<&str> = row.split(',').collect();
            assert_eq!(cols.len(), 6, "{row}");
            assert_eq!(cols[0], format!("e{i}"));
            assert!(cols[5].parse::<i64>().is_ok(), "{row}");
        }
        // CSV and JSONL carry the same data.
        let j = parse_lines(&gen_string(&opts(777, 5, 10, GenFormat::Jsonl)));
        for (row, v) in rows.iter().zip(&j) {
            let cols: Vec<&str> = row.split(',').collect();
            assert_eq!(Some(cols[1]), v["user_id"].as_str());
            assert_eq!(Some(cols[3]), v["merchant_id"].as_str());
            assert_eq!(cols[5].parse::<i64>().ok(), v["ts"].as_i64());
        }
    }

    #[test]
    fn users_are_zipf_skewed() {
        let rows = parse_lines(&gen_string(&opts(100_000, 21, 0, GenFormat::Jsonl)));
        let mut counts = vec![0u64; 1_000];
        for v in &rows {
            let u: usize = v["user_id"].as_str().expect("user")[1..]
                .parse()
                .expect("num");
            counts[u] += 1;
        }
        counts.sort_unstable();
        let max = counts[counts.len() - 1];
        let median = counts[counts.len() / 2];
        assert!(max > 20 * median.max(1), "max {max}, median {median}");
    }

    #[test]
    fn devices_mostly_usual() {
        let o = opts(100_000, 8, 0, GenFormat::Jsonl);
        let mut g = Generator::new(&o);
        let mut foreign = 0u64;
        for i in 0..o.events {
            let tx = g.next_tx(i);
            let usual: Vec<u64> = (1..=3)
                .map(|slot| g.user_hash(tx.user, slot) % g.device_space)
                .collect();
            if !usual.contains(&tx.device) {
                foreign += 1;
            }
        }
        // About 3% foreign devices.
        assert!((2_000..4_000).contains(&foreign), "foreign {foreign}");
        // Each user uses at most 3 devices outside foreign ones.
        let rows = parse_lines(&gen_string(&o));
        let mut per_user: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, u64>> =
            Default::default();
        for v in &rows {
            let u = v["user_id"].as_str().expect("user");
            let d = v["device_id"].as_str().expect("device");
            *per_user.entry(u).or_default().entry(d).or_default() += 1;
        }
        for devices in per_user.values() {
            assert!(
                devices.values().filter(|&&c| c >= 10).count() <= 3,
                "{devices:?}"
            );
        }
    }

    #[test]
    fn degenerate_options() {
        let o = GenOptions {
            events: 100,
            users: 0,
            days: 0,
            seed: 0,
            disorder_ms: u64::MAX,
            start_ms: i64::MIN + 5,
            format: GenFormat::Jsonl,
        };
        let rows = parse_lines(&gen_string(&o));
        assert_eq!(rows.len(), 100);
        assert!(rows.iter().all(|v| v["user_id"] == "u0"));
        assert!(rows.iter().all(|v| v["merchant_id"] == "m0"));
    }
}

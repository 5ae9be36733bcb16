//! Nested multi-type events: `sluice gen --kind nested`.
//!
//! One JSON object per line, three types (field order as written):
//!
//! ```text
//! {"type":"login","ts":..,"user":{"id":"u17","country":"FR"},"device":{"id":"d3","os":"ios"},"status":"failed","ip":"10.1.2.3"}
//! {"type":"transaction","ts":..,"user":{..},"device":{..},"payload":{"amount":12.30,"currency":"EUR","merchant":"m5"},"channel":"web"}
//! {"type":"register","ts":..,"user":{..},"device":{..},"channel":"partner"}
//! ```
//!
//! The same guarantees as the transactions: a pure function of [`GenOptions`], integer
//! arithmetic only, its own PRNG, event times and disorder as in the parent module. The mix:
//!
//! - types: 60% transactions, 30% logins, 10% registers;
//! - logins and transactions come from Zipf-skewed users (as in the transactions), registers
//!   from uniformly drawn users (sign-ups are not concentrated on the hottest accounts);
//! - every user has a country (and its currency) and 1–3 usual devices, hashed from the user
//!   into `2 * users` device ids, so devices are shared by chance (1M events over 100,000
//!   users: 39% of the devices in use have 2 to 8 users); 2% of logins and transactions
//!   come from a random device and 1% from one of eight hub devices (the highest ids; about
//!   3,000 users each in that data); a register comes from the user's first device, or 20%
//!   of the time from a hub;
//! - a device's `os` is a function of its id; logins come from the user's home IP 85% of the
//!   time;
//! - logins: 10% `"status":"failed"`, 1% `"status":null`, the rest `"ok"`;
//! - missing fields: 3% of all events have no `device`, 1% of transactions have no
//!   `payload.amount`.
//!
//! CSV flattens the objects into dotted headers (the way a pipeline's paths name CSV columns):
//! `type,ts,user.id,user.country,device.id,device.os,status,ip,payload.amount,payload.currency,payload.merchant,channel`,
//! with an empty cell for a field that is missing or null.

use std::io::{self, Write};

use super::{
    mix64, push_cents, push_i64, push_u64, write_chunked, GenFormat, GenOptions, Generator,
};

/// Per mille of events that are transactions (logins: [`LOGIN_PERMILLE`], registers the rest).
pub const TRANSACTION_PERMILLE: u64 = 600;
/// Per mille of events that are logins.
pub const LOGIN_PERMILLE: u64 = 300;
/// Per mille of logins with `"status":"failed"`.
pub const FAILED_PERMILLE: u64 = 100;
/// Per mille of logins with `"status":null`.
pub const NULL_STATUS_PERMILLE: u64 = 10;
/// Per mille of events without a `device` object.
pub const NO_DEVICE_PERMILLE: u64 = 30;
/// Per mille of transactions whose `payload` has no `amount`.
pub const NO_AMOUNT_PERMILLE: u64 = 10;
/// Hub devices (emulator farms, shared terminals): the ids just above the regular ones.
pub const HUB_DEVICES: u64 = 8;
/// Per mille of logins and transactions from a hub device.
const HUB_PERMILLE: u64 = 10;
/// Per mille of registers from a hub device.
const REGISTER_HUB_PERMILLE: u64 = 200;
/// Per mille of logins and transactions from a random device.
const FOREIGN_PERMILLE: u64 = 20;
/// Per mille of logins from the user's home IP.
const HOME_IP_PERMILLE: u64 = 850;

/// Countries with their currency and weight in percent.
const COUNTRIES: [(&str, &str, u64); 10] = [
    ("FR", "EUR", 20),
    ("DE", "EUR", 18),
    ("GB", "GBP", 14),
    ("US", "USD", 12),
    ("ES", "EUR", 10),
    ("IT", "EUR", 10),
    ("NL", "EUR", 6),
    ("BR", "BRL", 4),
    ("IN", "INR", 4),
    ("PL", "PLN", 2),
];

/// Operating systems of regular devices with their weight in percent.
const SYSTEMS: [(&str, u64); 5] = [
    ("android", 45),
    ("ios", 35),
    ("windows", 12),
    ("macos", 5),
    ("linux", 3),
];

/// The CSV header of the nested kind.
const CSV_HEADER: &[u8] =
    b"type,ts,user.id,user.country,device.id,device.os,status,ip,payload.amount,payload.currency,payload.merchant,channel\n";

/// Writes `opts.events` nested events to `out` in `opts.format`; returns the number written.
///
/// Buffered in 64 KiB chunks, `out` flushed at the end, like
/// [`write_transactions`](super::write_transactions).
pub fn write_nested(opts: &GenOptions, out: &mut dyn Write) -> io::Result<u64> {
    let mut gen = NestedGenerator::new(opts);
    write_chunked(opts, CSV_HEADER, out, |i, buf| {
        let event = gen.next_event(i);
        match opts.format {
            GenFormat::Jsonl => event.write_jsonl(buf),
            GenFormat::Csv => event.write_csv(buf),
        }
    })
}

/// The type of a nested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Transaction,
    Register,
}

/// A login's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Failed,
    Null,
}

/// One generated nested event; fields that do not belong to its type are unused.
struct Event {
    kind: Kind,
    ts: i64,
    user: u64,
    country: usize,
    /// Device id and operating system; `None`: no `device` object.
    device: Option<(u64, &'static str)>,
    status: Status,
    ip: u32,
    /// `None`: a transaction without `payload.amount`.
    cents: Option<u64>,
    merchant: u64,
    channel: &'static str,
}

impl Event {
    fn type_name(&self) -> &'static [u8] {
        match self.kind {
            Kind::Login => b"login",
            Kind::Transaction => b"transaction",
            Kind::Register => b"register",
        }
    }

    fn write_jsonl(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(self.type_name());
        buf.extend_from_slice(b"\",\"ts\":");
        push_i64(buf, self.ts);
        buf.extend_from_slice(b",\"user\":{\"id\":\"u");
        push_u64(buf, self.user);
        buf.extend_from_slice(b"\",\"country\":\"");
        buf.extend_from_slice(COUNTRIES[self.country].0.as_bytes());
        buf.extend_from_slice(b"\"}");
        if let Some((id, os)) = self.device {
            buf.extend_from_slice(b",\"device\":{\"id\":\"d");
            push_u64(buf, id);
            buf.extend_from_slice(b"\",\"os\":\"");
            buf.extend_from_slice(os.as_bytes());
            buf.extend_from_slice(b"\"}");
        }
        match self.kind {
            Kind::Login => {
                buf.extend_from_slice(match self.status {
                    Status::Ok => b",\"status\":\"ok\"".as_slice(),
                    Status::Failed => b",\"status\":\"failed\"",
                    Status::Null => b",\"status\":null",
                });
                buf.extend_from_slice(b",\"ip\":\"");
                push_ip(buf, self.ip);
                buf.push(b'"');
            }
            Kind::Transaction => {
                buf.extend_from_slice(b",\"payload\":{");
                if let Some(cents) = self.cents {
                    buf.extend_from_slice(b"\"amount\":");
                    push_cents(buf, cents);
                    buf.push(b',');
                }
                buf.extend_from_slice(b"\"currency\":\"");
                buf.extend_from_slice(COUNTRIES[self.country].1.as_bytes());
                buf.extend_from_slice(b"\",\"merchant\":\"m");
                push_u64(buf, self.merchant);
                buf.extend_from_slice(b"\"},\"channel\":\"");
                buf.extend_from_slice(self.channel.as_bytes());
                buf.push(b'"');
            }
            Kind::Register => {
                buf.extend_from_slice(b",\"channel\":\"");
                buf.extend_from_slice(self.channel.as_bytes());
                buf.push(b'"');
            }
        }
        buf.extend_from_slice(b"}\n");
    }

    /// One row under [`CSV_HEADER`]; no cell needs quoting.
    fn write_csv(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.type_name());
        buf.push(b',');
        push_i64(buf, self.ts);
        buf.extend_from_slice(b",u");
        push_u64(buf, self.user);
        buf.push(b',');
        buf.extend_from_slice(COUNTRIES[self.country].0.as_bytes());
        buf.push(b',');
        if let Some((id, os)) = self.device {
            buf.push(b'd');
            push_u64(buf, id);
            buf.push(b',');
            buf.extend_from_slice(os.as_bytes());
        } else {
            buf.push(b',');
        }
        buf.push(b',');
        if self.kind == Kind::Login {
            buf.extend_from_slice(match self.status {
                Status::Ok => b"ok".as_slice(),
                Status::Failed => b"failed",
                Status::Null => b"",
            });
            buf.push(b',');
            push_ip(buf, self.ip);
        } else {
            buf.push(b',');
        }
        buf.push(b',');
        if self.kind == Kind::Transaction {
            if let Some(cents) = self.cents {
                push_cents(buf, cents);
            }
            buf.push(b',');
            buf.extend_from_slice(COUNTRIES[self.country].1.as_bytes());
            buf.extend_from_slice(b",m");
            push_u64(buf, self.merchant);
        } else {
            buf.extend_from_slice(b",,");
        }
        buf.push(b',');
        if self.kind != Kind::Login {
            buf.extend_from_slice(self.channel.as_bytes());
        }
        buf.push(b'\n');
    }
}

/// Writes an IPv4 address in the private range `10.0.0.0/8` from its low 24 bits.
fn push_ip(buf: &mut Vec<u8>, ip: u32) {
    buf.extend_from_slice(b"10.");
    push_u64(buf, u64::from((ip >> 16) & 0xFF));
    buf.push(b'.');
    push_u64(buf, u64::from((ip >> 8) & 0xFF));
    buf.push(b'.');
    push_u64(buf, u64::from(ip & 0xFF));
}

/// The item of `table` that `r` (in `[0, 100)`) falls on, weights in percent.
fn pick<T: Copy>(table: &[(T, u64)], mut r: u64) -> T {
    for &(item, w) in table {
        if r < w {
            return item;
        }
        r -= w;
    }
    table[table.len() - 1].0
}

/// Generator state: the transactions' generator (PRNG, Zipf users and merchants, event
/// times) plus the device space.
struct NestedGenerator {
    base: Generator,
    users: u64,
    /// Regular device ids are `0..device_space`; hubs follow.
    device_space: u64,
}

impl NestedGenerator {
    fn new(opts: &GenOptions) -> Self {
        let users = opts.users.max(1);
        NestedGenerator {
            base: Generator::new(opts),
            users,
            device_space: users.saturating_mul(2),
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.base.rng.below(n)
    }

    fn country_of(&self, user: u64) -> usize {
        let mut r = self.base.user_hash(user, 0xC0) % 100;
        for (i, &(_, _, w)) in COUNTRIES.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        0
    }

    fn os_of(&self, device: u64) -> &'static str {
        if device >= self.device_space {
            return "android";
        }
        pick(&SYSTEMS, mix64(device ^ self.base.seed ^ 0x05) % 100)
    }

    /// The user's usual device in `slot` (0 is the primary one).
    fn usual_device(&self, user: u64, slot: u64) -> u64 {
        self.base.user_hash(user, 0xDE + slot) % self.device_space
    }

    /// A login's or transaction's device: usual (1–3 per user, the first 70% of the time),
    /// random, or a hub.
    fn device_for(&mut self, user: u64) -> u64 {
        let r = self.below(1000);
        if r < HUB_PERMILLE {
            return self.device_space + self.below(HUB_DEVICES);
        }
        if r < HUB_PERMILLE + FOREIGN_PERMILLE {
            return self.below(self.device_space);
        }
        // 50% of users have 1 usual device, 35% have 2, 15% have 3.
        let count = match self.base.user_hash(user, 0xDC) % 100 {
            0..=49 => 1,
            50..=84 => 2,
            _ => 3,
        };
        let slot = match (count, self.below(100)) {
            (1, _) => 0,
            (_, r) if r < 70 => 0,
            (c, r) => 1 + (r - 70) % (c - 1),
        };
        self.usual_device(user, slot)
    }

    fn register_device(&mut self) -> (u64, u64) {
        let user = self.below(self.users);
        let device = if self.below(1000) < REGISTER_HUB_PERMILLE {
            self.device_space + self.below(HUB_DEVICES)
        } else {
            self.usual_device(user, 0)
        };
        (user, device)
    }

    fn next_event(&mut self, index: u64) -> Event {
        let r = self.below(1000);
        let kind = if r < TRANSACTION_PERMILLE {
            Kind::Transaction
        } else if r < TRANSACTION_PERMILLE + LOGIN_PERMILLE {
            Kind::Login
        } else {
            Kind::Register
        };
        let (user, device) = if kind == Kind::Register {
            self.register_device()
        } else {
            let user = self.base.users.sample(&mut self.base.rng);
            (user, self.device_for(user))
        };
        let device = (self.below(1000) >= NO_DEVICE_PERMILLE).then(|| (device, self.os_of(device)));
        let mut event = Event {
            kind,
            ts: 0,
            user,
            country: self.country_of(user),
            device,
            status: Status::Ok,
            ip: 0,
            cents: None,
            merchant: 0,
            channel: "",
        };
        match kind {
            Kind::Login => self.fill_login(&mut event),
            Kind::Transaction => self.fill_transaction(&mut event),
            Kind::Register => {
                event.channel = pick(
                    &[("web", 50), ("app", 35), ("partner", 15)],
                    self.below(100),
                );
            }
        }
        event.ts = self.base.event_time(index);
        event
    }

    fn fill_login(&mut self, event: &mut Event) {
        let r = self.below(1000);
        event.status = if r < NULL_STATUS_PERMILLE {
            Status::Null
        } else if r < NULL_STATUS_PERMILLE + FAILED_PERMILLE {
            Status::Failed
        } else {
            Status::Ok
        };
        let home = self.below(1000) < HOME_IP_PERMILLE;
        let h = if home {
            self.base.user_hash(event.user, 0x1F)
        } else {
            self.base.rng.next_u64()
        };
        event.ip = (h & 0xFF_FFFF) as u32;
    }

    fn fill_transaction(&mut self, event: &mut Event) {
        event.merchant = self.base.merchants.sample(&mut self.base.rng);
        let cents = self.base.amount_cents();
        event.cents = (self.below(1000) >= NO_AMOUNT_PERMILLE).then_some(cents);
        event.channel = pick(&[("app", 60), ("web", 40)], self.below(100));
    }
}

#[cfg(test)]
mod tests;

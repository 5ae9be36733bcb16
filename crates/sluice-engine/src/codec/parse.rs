//! The parse stage: extracts the event time, keys and aggregated fields from raw records
//! without building a JSON tree; everything else in a record is validated and skipped.

use serde::de::Deserializer;
use sluice_core::expr::{self, Compiled, Fields, Value};
use sluice_core::{key_hash, FieldPath, KeyEncoder, Plan};

use arrow_array::RecordBatch;

use crate::codec::arrow_read::ColumnReader;
use crate::codec::field::{json_number, Captured, LineVisitor};
use crate::codec::format::escape_json_str;
use crate::codec::paths::{KeyMatch, PathTree};
use crate::codec::scan::scan_line;
use crate::codec::time::TimeFormat;
use crate::connector::parquet::{json_lines, RowGroup};
use crate::dataflow::batch::{
    CsvRow, Event, FieldKind, FieldSlot, KeySlot, ParsedBatch, RawBatch, Rejection, Span,
};

/// The output field every enriched event gets; an input record may not have it.
pub const FEATURES_FIELD: &str = "features";

/// What to extract from records, derived once from the plan.
#[derive(Debug, Clone)]
pub struct Extractor {
    /// Each wanted field's path as written (in messages); its index is its capture slot.
    names: Vec<String>,
    /// The same paths as a tree, for the scanners.
    tree: PathTree,
    /// The same paths, parsed (for columnar input).
    paths: Vec<FieldPath>,
    /// Each path's keys joined by dots: the CSV column that holds it.
    columns: Vec<String>,
    time: usize,
    time_format: TimeFormat,
    key_fields: Vec<Vec<usize>>,
    of_fields: Vec<usize>,
    numeric: Vec<bool>,
    distinct: Vec<bool>,
    csv_header: Vec<Option<usize>>,
    csv_names: Vec<String>,
    output_key: Option<usize>,
    /// The plan's filters, compiled against the capture slots (bit `i`: `plan.filters[i]`).
    filters: Vec<Compiled>,
    /// The capture slot of each field derived features read (`plan.expr_fields`).
    expr_fields: Vec<usize>,
    /// Per `of` field: `None` when a feature without a filter aggregates it, else the filters
    /// of the features that do (an event matching none of them is not type-checked there).
    field_filters: Vec<Option<u64>>,
    /// Whether a Parquet row group's columns are kept for a columnar output.
    keep_columns: bool,
}

/// Per-thread scratch space of the parse stage.
#[derive(Debug, Default)]
pub struct ParseScratch {
    pub(crate) caps: Vec<Captured>,
    pub(crate) text: Vec<u8>,
    pub(crate) reserved: bool,
}

impl Extractor {
    /// Builds the extractor for a plan whose events carry their time in `time_field`.
    pub fn new(plan: &Plan, time_field: &str, time_format: TimeFormat) -> Self {
        let mut ex = Extractor {
            names: Vec::new(),
            tree: PathTree::new(FEATURES_FIELD),
            paths: Vec::new(),
            columns: Vec::new(),
            time: 0,
            time_format,
            key_fields: Vec::new(),
            of_fields: Vec::new(),
            numeric: plan.numeric_fields.clone(),
            distinct: plan.distinct_fields.clone(),
            csv_header: Vec::new(),
            csv_names: Vec::new(),
            output_key: None,
            filters: Vec::new(),
            expr_fields: Vec::new(),
            field_filters: field_filters(plan),
            keep_columns: false,
        };
        ex.time = ex.slot(time_field);
        ex.key_fields = plan
            .keys
            .iter()
            .map(|k| k.by.iter().map(|f| ex.slot(f)).collect())
            .collect();
        ex.of_fields = plan.fields.iter().map(|f| ex.slot(f)).collect();
        ex.expr_fields = plan.expr_fields.iter().map(|f| ex.slot(f)).collect();
        for text in &plan.filters {
            // A plan holds only filters that parse (`Plan::new` checks them); one that did
            // not would match nothing, and keep its bit in place for the filters after it.
            let compiled = expr::parse_filter(text)
                .or_else(|_| expr::parse_filter("false"))
                .and_then(|ast| {
                    ast.compile(|path| {
                        let path = FieldPath::from_keys(path.to_vec());
                        Ok(ex.slot(&path.to_string()) as u32)
                    })
                });
            if let Ok(compiled) = compiled {
                ex.filters.push(compiled);
            }
        }
        ex
    }

    /// The capture slot of the field at `path` (a [`FieldPath`] text), added if new.
    fn slot(&mut self, path: &str) -> usize {
        if let Some(i) = self.names.iter().position(|n| n == path) {
            return i;
        }
        // Paths come from a validated plan; a text that is not one is a top-level name.
        let parsed = FieldPath::parse(path).unwrap_or_else(|_| FieldPath::top(path));
        let slot = self.names.len();
        self.tree.insert(&parsed, slot);
        self.columns.push(parsed.joined());
        self.paths.push(parsed.clone());
        self.names.push(path.to_owned());
        slot
    }

    /// Also extracts `field` of every event as its message key for a keyed sink (see
    /// [`ParsedBatch::output_keys`]): a string's text, a number or boolean as JSON; no key
    /// when it is missing, null, an object or an array.
    pub fn with_output_key(mut self, field: &str) -> Self {
        self.output_key = Some(self.slot(field));
        self
    }

    /// Keeps the columns of Parquet row groups for a columnar output
    /// ([`ParsedBatch::columns`]).
    pub fn keeping_columns(mut self) -> Self {
        self.keep_columns = true;
        self
    }

    /// Sets the CSV header (the column names, in order).
    pub fn with_csv_header(mut self, header: Vec<String>) -> Self {
        self.csv_header = header
            .iter()
            .map(|h| self.columns.iter().position(|n| n == h))
            .collect();
        self.csv_names = header;
        self
    }

    /// Number of distinct fields extracted from each record.
    #[cfg(test)]
    pub(crate) fn wanted(&self) -> usize {
        self.names.len()
    }

    /// What key `name` of the object at `node` of the path tree is (node 0: the record).
    #[inline]
    pub(crate) fn lookup(&self, node: u32, name: &str) -> KeyMatch {
        self.tree.lookup(node, name)
    }

    /// [`Extractor::lookup`] of a key given as bytes.
    #[inline]
    pub(crate) fn lookup_bytes(&self, node: u32, name: &[u8]) -> KeyMatch {
        self.tree.lookup_bytes(node, name)
    }

    /// Parses every record of a raw batch.
    pub fn parse_batch(&self, seq: u64, raw: RawBatch, scratch: &mut ParseScratch) -> ParsedBatch {
        let mut out = ParsedBatch::empty(seq);
        let raw = match raw {
            RawBatch::Lines { data, first_line } => {
                self.parse_lines(&data, first_line, scratch, &mut out);
                RawBatch::Lines { data, first_line }
            }
            RawBatch::Csv(rows) => {
                for row in &rows {
                    self.parse_csv_row(row, scratch, &mut out);
                }
                RawBatch::Csv(rows)
            }
            RawBatch::RowGroup(group) => {
                // One batch for the whole row group.
                let whole = RowGroup { slices: 1, ..group };
                let mut parsed = self.parse_row_group(seq, &whole, scratch);
                return parsed.pop().unwrap_or(out);
            }
        };
        out.raw = raw;
        out
    }

    /// Parses a Parquet row group into one batch per piece ([`RowGroup::pieces`]), numbered
    /// from `seq`, each with the source position after it. The row group is decoded once;
    /// each piece is a slice of its columns.
    pub fn parse_row_group(
        &self,
        seq: u64,
        group: &RowGroup,
        scratch: &mut ParseScratch,
    ) -> Vec<ParsedBatch> {
        let decoded = group.decode();
        let reader = match &decoded {
            Ok(d) if self.keep_columns => ColumnReader::new(&d.parsing, &self.paths),
            _ => None,
        };
        let mut batches = Vec::with_capacity(group.slices as usize);
        for (j, piece) in group.pieces().enumerate() {
            let mut out = ParsedBatch::empty(seq + j as u64);
            let first_line = group.first_row + piece.start;
            let (start, len) = (piece.start as usize, (piece.end - piece.start) as usize);
            let mut data = Vec::new();
            match &decoded {
                Err(message) => {
                    self.reject_rows(first_line, len as u64, message, scratch, &mut out)
                }
                Ok(d) => {
                    let parsing = d.parsing.slice(start, len);
                    match &reader {
                        Some(reader) => {
                            let part = reader.slice(start, len);
                            self.parse_columns(&part, &parsing, first_line, scratch, &mut out);
                        }
                        None => match json_lines(&parsing, &mut data) {
                            Ok(()) => self.parse_lines(&data, first_line, scratch, &mut out),
                            Err(message) => {
                                let message = format!("{}: {message}", group.describe());
                                self.reject_rows(
                                    first_line, len as u64, &message, scratch, &mut out,
                                )
                            }
                        },
                    }
                    if self.keep_columns {
                        out.columns = Some(d.columns.slice(start, len));
                    }
                }
            }
            out.raw = RawBatch::Lines { data, first_line };
            let (end, digest) = group.position_after(piece.end);
            out.end = end;
            out.digest = Some(digest);
            batches.push(out);
        }
        batches
    }

    /// Nothing of a row group can be read: each of its rows is a dead letter saying why, so
    /// that none is lost without a trace.
    fn reject_rows(
        &self,
        first_line: u64,
        rows: u64,
        message: &str,
        s: &mut ParseScratch,
        out: &mut ParsedBatch,
    ) {
        let span = Span::default();
        for row in 0..rows {
            let rejection = Rejection {
                reason: "malformed",
                message: message.to_owned(),
            };
            s.caps.clear();
            s.reserved = false;
            self.finish_event(first_line + row, span, span, Some(rejection), s, out);
        }
    }

    /// Parses the rows of a decoded row group from its columns, the first numbered
    /// `first_row`. A rejected row's record for the dead letters is its JSON text.
    fn parse_columns(
        &self,
        reader: &ColumnReader,
        batch: &RecordBatch,
        first_row: u64,
        s: &mut ParseScratch,
        out: &mut ParsedBatch,
    ) {
        let rows = batch.num_rows();
        out.events.reserve(rows);
        out.keys.reserve(rows * self.key_fields.len());
        out.fields.reserve(rows * self.of_fields.len());
        out.arena
            .reserve(rows * 16 * (self.key_fields.len() + self.of_fields.len()));
        for row in 0..rows {
            s.caps.clear();
            s.caps.resize(self.names.len(), Captured::Missing);
            s.text.clear();
            s.reserved = false;
            reader.capture(row, &mut s.caps, &mut s.text);
            let at = out.arena.len();
            let span = Span {
                in_arena: true,
                start: at,
                end: at,
            };
            self.finish_event(first_row + row as u64, span, span, None, s, out);
            if let Some(event) = out.events.last_mut().filter(|e| e.rejection.is_some()) {
                let start = out.arena.len();
                if json_lines(&batch.slice(row, 1), &mut out.arena).is_ok() {
                    let end = trim_end(&out.arena[start..]).len() + start;
                    out.arena.truncate(end);
                    event.raw = Span {
                        in_arena: true,
                        start,
                        end,
                    };
                }
            }
        }
    }

    /// Parses JSONL lines, the first numbered `first_line`.
    fn parse_lines(
        &self,
        data: &[u8],
        first_line: u64,
        scratch: &mut ParseScratch,
        out: &mut ParsedBatch,
    ) {
        // Records are rarely shorter than 64 bytes: reserve once instead of growing.
        let records = data.len() / 64 + 1;
        out.events.reserve(records);
        out.keys.reserve(records * self.key_fields.len());
        out.fields.reserve(records * self.of_fields.len());
        out.arena
            .reserve(records * 16 * (self.key_fields.len() + self.of_fields.len()));
        let mut line_no = first_line;
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let line = trim_end(&data[start..end]);
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.parse_json_line(line, start, line_no, scratch, out);
            }
            start = end + 1;
            line_no += 1;
        }
    }

    fn parse_json_line(
        &self,
        line: &[u8],
        offset: usize,
        line_no: u64,
        s: &mut ParseScratch,
        out: &mut ParsedBatch,
    ) {
        s.caps.clear();
        s.caps.resize(self.names.len(), Captured::Missing);
        s.text.clear();
        s.reserved = false;
        let raw = Span {
            in_arena: false,
            start: offset,
            end: offset + line.len(),
        };
        // The body is the object without its closing brace; a valid object ends with `}`.
        let body = Span {
            end: raw.end.saturating_sub(1),
            ..raw
        };
        if scan_line(self, line, s) {
            return self.finish_event(line_no, raw, body, None, s, out);
        }
        // Not the plain case (or not valid): serde_json decides, and words any error.
        s.caps.fill(Captured::Missing);
        s.text.clear();
        s.reserved = false;
        let mut de = serde_json::Deserializer::from_slice(line);
        let parsed = de
            .deserialize_map(LineVisitor {
                ex: self,
                s,
                node: 0,
            })
            .and_then(|()| de.end());
        let rejection = match parsed {
            Err(e) => {
                // serde_json says "at line 1 column N" of the record; the record's own line
                // number is in the dead letter, so keep only the column.
                let mut text = e.to_string();
                if let Some(at) = text.rfind(" at line ") {
                    text.truncate(at);
                }
                Some(Rejection {
                    reason: "malformed",
                    message: format!("malformed JSON at column {}: {text}", e.column()),
                })
            }
            Ok(()) => None,
        };
        self.finish_event(line_no, raw, body, rejection, s, out);
    }

    fn parse_csv_row(&self, row: &CsvRow, s: &mut ParseScratch, out: &mut ParsedBatch) {
        s.caps.clear();
        s.caps.resize(self.names.len(), Captured::Missing);
        s.text.clear();
        s.reserved = false;
        let raw_start = out.arena.len();
        let record = match &row.fields {
            Ok(record) => record,
            Err(message) => {
                let span = Span {
                    in_arena: true,
                    start: raw_start,
                    end: raw_start,
                };
                let rejection = Rejection {
                    reason: "malformed",
                    message: format!("malformed CSV: {message}"),
                };
                return self.finish_event(row.line, span, span, Some(rejection), s, out);
            }
        };
        // The raw record, re-encoded as one CSV line, for the dead letters.
        for (i, cell) in record.iter().enumerate() {
            if i > 0 {
                out.arena.push(b',');
            }
            write_csv_cell(&mut out.arena, cell);
        }
        let raw = Span {
            in_arena: true,
            start: raw_start,
            end: out.arena.len(),
        };
        let mut rejection = None;
        if record.len() != self.csv_names.len() {
            rejection = Some(Rejection {
                reason: "malformed",
                message: format!(
                    "malformed CSV: the row has {} fields but the header has {}",
                    record.len(),
                    self.csv_names.len()
                ),
            });
        }
        let body_start = out.arena.len();
        out.arena.push(b'{');
        for (i, cell) in record.iter().enumerate() {
            if rejection.is_some() {
                break;
            }
            let Ok(text) = std::str::from_utf8(cell) else {
                rejection = Some(Rejection {
                    reason: "invalid_utf8",
                    message: format!(
                        "column `{}` is not valid UTF-8",
                        self.csv_names.get(i).map_or("?", |n| n)
                    ),
                });
                break;
            };
            let name = &self.csv_names[i];
            if i > 0 {
                out.arena.push(b',');
            }
            escape_json_str(&mut out.arena, name);
            out.arena.push(b':');
            let value = if text.is_empty() {
                out.arena.extend_from_slice(b"null");
                Captured::Null
            } else if let Some(number) = json_number(text) {
                out.arena.extend_from_slice(text.as_bytes());
                number
            } else {
                escape_json_str(&mut out.arena, text);
                let start = s.text.len();
                s.text.extend_from_slice(text.as_bytes());
                Captured::Str(start, s.text.len())
            };
            if name == FEATURES_FIELD {
                s.reserved = true;
            }
            if let Some(Some(w)) = self.csv_header.get(i) {
                s.caps[*w] = value;
            }
        }
        let body = Span {
            in_arena: true,
            start: body_start,
            end: out.arena.len(),
        };
        self.finish_event(row.line, raw, body, rejection, s, out);
    }

    /// Turns the captured fields into the event's time, keys and fields.
    fn finish_event(
        &self,
        line: u64,
        raw: Span,
        body: Span,
        mut rejection: Option<Rejection>,
        s: &ParseScratch,
        out: &mut ParsedBatch,
    ) {
        let arena_mark = out.arena.len();
        let mut ts = 0;
        if rejection.is_none() && s.reserved {
            rejection = Some(Rejection {
                reason: "reserved_field",
                message: format!(
                    "the field `{FEATURES_FIELD}` is reserved for the computed features"
                ),
            });
        }
        if rejection.is_none() {
            match self.time(s) {
                Ok(t) => ts = t,
                Err(r) => rejection = Some(r),
            }
        }
        if rejection.is_none() {
            for fields in &self.key_fields {
                match self.key(fields, s, &mut out.arena) {
                    Ok(slot) => out.keys.push(slot),
                    Err(r) => {
                        rejection = Some(r);
                        break;
                    }
                }
            }
        }
        // Filters first: an `of` field is only type-checked when the event would be added to
        // a feature aggregating it.
        let mut matched = 0u64;
        if rejection.is_none() && !self.filters.is_empty() {
            let fields = CapturedFields(s);
            for (i, filter) in self.filters.iter().enumerate() {
                matched |= u64::from(filter.eval_filter(&fields)) << i;
            }
        }
        if rejection.is_none() {
            for (j, &w) in self.of_fields.iter().enumerate() {
                if self.field_filters[j].is_some_and(|mask| mask & matched == 0) {
                    out.fields.push(FieldSlot::default());
                    continue;
                }
                match self.field(j, w, s, &mut out.arena) {
                    Ok(slot) => out.fields.push(slot),
                    Err(r) => {
                        rejection = Some(r);
                        break;
                    }
                }
            }
        }
        if rejection.is_some() {
            // Keep the arrays event-major: a rejected event gets placeholders.
            out.arena.truncate(arena_mark);
            let n = out.events.len();
            out.keys.truncate(n * self.key_fields.len());
            out.keys
                .resize((n + 1) * self.key_fields.len(), KeySlot::default());
            out.fields.truncate(n * self.of_fields.len());
            out.fields
                .resize((n + 1) * self.of_fields.len(), FieldSlot::default());
        }
        if !self.expr_fields.is_empty() {
            for &w in &self.expr_fields {
                let slot = if rejection.is_some() {
                    FieldSlot::default()
                } else {
                    expr_value(s, w, &mut out.arena)
                };
                out.expr_values.push(slot);
            }
        }
        if !self.filters.is_empty() {
            out.matched
                .push(if rejection.is_some() { 0 } else { matched });
        }
        if let Some(w) = self.output_key {
            let key = if rejection.is_some() {
                None
            } else {
                output_key(s, w, &mut out.arena)
            };
            out.output_keys.push(key);
        }
        out.events.push(Event {
            line,
            ts,
            raw,
            body,
            rejection: rejection.map(Box::new),
        });
    }

    fn text(s: &ParseScratch, start: usize, end: usize) -> &str {
        std::str::from_utf8(&s.text[start..end]).unwrap_or_default()
    }

    fn time(&self, s: &ParseScratch) -> Result<i64, Rejection> {
        let name = &self.names[self.time];
        let bad = |message: String| Rejection {
            reason: "bad_time",
            message: format!("time field `{name}`: {message}"),
        };
        match s.caps[self.time] {
            Captured::Missing | Captured::Null => Err(Rejection {
                reason: "missing_time",
                message: format!("the time field `{name}` is missing"),
            }),
            Captured::Int(v) => self.time_format.from_int(v).map_err(bad),
            Captured::Float(v) => self.time_format.from_float(v).map_err(bad),
            Captured::Str(a, b) => self.time_format.from_text(Self::text(s, a, b)).map_err(bad),
            Captured::Bool(_) => Err(bad(format!(
                "expected {}, got a boolean",
                self.time_format.name()
            ))),
            Captured::Other(t) => Err(bad(format!(
                "expected {}, got {t}",
                self.time_format.name()
            ))),
        }
    }

    fn key(
        &self,
        fields: &[usize],
        s: &ParseScratch,
        arena: &mut Vec<u8>,
    ) -> Result<KeySlot, Rejection> {
        // A wrong type is an error whatever the other key fields hold, so check all of them
        // before deciding that a missing one makes the key absent.
        if let Some((w, t)) = fields.iter().find_map(|&w| match s.caps[w] {
            Captured::Other(t) => Some((w, t)),
            _ => None,
        }) {
            return Err(Rejection {
                reason: "wrong_type",
                message: format!(
                    "key field `{}`: expected a string, number or boolean, got {t}",
                    self.names[w]
                ),
            });
        }
        let start = arena.len();
        let mut enc = KeyEncoder::new(arena);
        for &w in fields {
            match s.caps[w] {
                Captured::Missing | Captured::Null | Captured::Other(_) => {
                    arena.truncate(start);
                    return Ok(KeySlot::default());
                }
                Captured::Int(v) => enc.int(v),
                Captured::Float(v) => enc.num(v),
                Captured::Str(a, b) => enc.str_bytes(&s.text[a..b]),
                Captured::Bool(v) => enc.bool(v),
            }
        }
        Ok(KeySlot {
            present: true,
            hash: key_hash(&arena[start..]),
            start,
            end: arena.len(),
        })
    }

    fn field(
        &self,
        j: usize,
        w: usize,
        s: &ParseScratch,
        arena: &mut Vec<u8>,
    ) -> Result<FieldSlot, Rejection> {
        let start = arena.len();
        let wrong = |got: &str| Rejection {
            reason: "wrong_type",
            message: format!(
                "field `{}`: expected {}, got {got}",
                self.names[w],
                if self.numeric[j] {
                    "a number"
                } else {
                    "a number, string or boolean"
                }
            ),
        };
        let mut enc = KeyEncoder::new(arena);
        let (kind, num) = match s.caps[w] {
            Captured::Missing | Captured::Null => return Ok(FieldSlot::default()),
            // Canonical bytes of a number are only needed to count it as a distinct value.
            Captured::Int(v) => {
                if self.distinct[j] {
                    enc.int(v);
                }
                (FieldKind::Num, v as f64)
            }
            Captured::Float(v) => {
                if self.distinct[j] {
                    enc.num(v);
                }
                (FieldKind::Num, v)
            }
            Captured::Str(a, b) if !self.numeric[j] => {
                enc.str_bytes(&s.text[a..b]);
                (FieldKind::Str, 0.0)
            }
            Captured::Bool(v) if !self.numeric[j] => {
                enc.bool(v);
                (FieldKind::Bool, 0.0)
            }
            Captured::Str(a, b) => {
                return Err(wrong(&format!("the string {:?}", Self::text(s, a, b))))
            }
            Captured::Bool(v) => return Err(wrong(&format!("the boolean {v}"))),
            Captured::Other(t) => return Err(wrong(t)),
        };
        Ok(FieldSlot {
            kind,
            num,
            start,
            end: arena.len(),
        })
    }
}

/// Per `of` field of `plan`: `None` when a feature without a filter aggregates it (or a
/// relation feature reads it), else the filters (bit `i`: `plan.filters[i]`) of the features
/// that do.
fn field_filters(plan: &Plan) -> Vec<Option<u64>> {
    let mut masks = vec![Some(0u64); plan.fields.len()];
    let mut add = |field: usize, filter: Option<usize>| {
        masks[field] = match (masks[field], filter) {
            (Some(mask), Some(i)) => Some(mask | 1 << i),
            _ => None,
        };
    };
    for key in &plan.keys {
        for s in &key.series {
            if let Some(field) = s.of {
                add(field, s.filter);
            }
        }
    }
    // Relation features read their fields on every event (each hop has its own filter).
    for r in &plan.relations {
        for &field in r.by.iter().chain([&r.via]).chain(r.of.as_ref()) {
            add(field, None);
        }
    }
    // An event's id is read on every event.
    if let Some(field) = plan.id_field {
        add(field, None);
    }
    masks
}

/// The slot of captured field `w` for a derived feature: a string's text in the arena.
fn expr_value(s: &ParseScratch, w: usize, arena: &mut Vec<u8>) -> FieldSlot {
    let start = arena.len();
    let (kind, num) = match s.caps[w] {
        Captured::Missing | Captured::Null => return FieldSlot::default(),
        Captured::Int(v) => (FieldKind::Num, v as f64),
        Captured::Float(v) => (FieldKind::Num, v),
        Captured::Str(a, b) => {
            arena.extend_from_slice(&s.text[a..b]);
            (FieldKind::Str, 0.0)
        }
        Captured::Bool(v) => (FieldKind::Bool, if v { 1.0 } else { 0.0 }),
        Captured::Other(_) => (FieldKind::Other, 0.0),
    };
    FieldSlot {
        kind,
        num,
        start,
        end: arena.len(),
    }
}

/// The captured fields of one record, as a filter reads them.
struct CapturedFields<'a>(&'a ParseScratch);

impl Fields for CapturedFields<'_> {
    #[inline]
    fn get(&self, slot: u32) -> Value<'_> {
        let s = self.0;
        match s.caps.get(slot as usize) {
            None | Some(Captured::Missing | Captured::Null) => Value::Missing,
            Some(&Captured::Int(v)) => Value::Num(v as f64),
            Some(&Captured::Float(v)) => Value::Num(v),
            Some(&Captured::Str(a, b)) => {
                std::str::from_utf8(&s.text[a..b]).map_or(Value::Missing, Value::Str)
            }
            Some(&Captured::Bool(v)) => Value::Bool(v),
            Some(Captured::Other(_)) => Value::Other,
        }
    }
}

/// Writes the message key text of captured field `w` to the arena: a string's text, a number
/// or boolean as JSON; `None` for a missing or null value, an object or an array.
fn output_key(s: &ParseScratch, w: usize, arena: &mut Vec<u8>) -> Option<(usize, usize)> {
    let start = arena.len();
    match s.caps[w] {
        Captured::Missing | Captured::Null | Captured::Other(_) => return None,
        Captured::Str(a, b) => arena.extend_from_slice(&s.text[a..b]),
        Captured::Int(v) => arena.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Captured::Float(v) => serde_json::to_writer(&mut *arena, &v).ok()?,
        Captured::Bool(v) => arena.extend_from_slice(if v { b"true" } else { b"false" }),
    }
    Some((start, arena.len()))
}

/// The text of a string field slot (after the tag byte, before the length suffix).
pub fn slot_text<'a>(arena: &'a [u8], slot: &FieldSlot) -> &'a [u8] {
    &arena[(slot.start + 1).min(slot.end)..slot.end.saturating_sub(4).max(slot.start)]
}

fn trim_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && line[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    &line[..end]
}

fn write_csv_cell(out: &mut Vec<u8>, cell: &[u8]) {
    if cell
        .iter()
        .any(|&c| matches!(c, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        for &c in cell {
            if c == b'"' {
                out.push(b'"');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{Agg, FeatureSpec};

    /// The message keys of `lines` keyed by `field`, for a plan counting by `u`.
    fn keys(lines: &str, field: &str) -> Vec<Option<String>> {
        let count = FeatureSpec {
            name: "n".into(),
            agg: Agg::Count,
            of: None,
            by: vec!["u".into()],
            window_ms: 10,
            granularity_ms: 1,
            filter: None,
        };
        let plan = Plan::new(vec![count], 0).expect("valid plan");
        let extractor = Extractor::new(&plan, "ts", TimeFormat::EpochMs).with_output_key(field);
        let raw = RawBatch::Lines {
            data: lines.as_bytes().to_vec(),
            first_line: 1,
        };
        let parsed = extractor.parse_batch(0, raw, &mut ParseScratch::default());
        parsed
            .output_keys
            .iter()
            .map(|k| k.map(|(a, b)| String::from_utf8_lossy(&parsed.arena[a..b]).into_owned()))
            .collect()
    }

    #[test]
    fn output_keys_are_the_field_value_as_text() {
        let lines = concat!(
            r#"{"ts":1,"a":{"k":"inner"},"k":"u\"1","n":42,"x":4.5,"b":true,"z":null}"#,
            "\n",
            r#"{"ts":2,"k":7,"u":"a"}"#,
            "\n",
            "not json\n",
        );
        assert_eq!(
            keys(lines, "k"),
            [Some(r#"u"1"#.to_owned()), Some("7".to_owned()), None]
        );
        let first = |field| keys(lines, field)[0].clone();
        assert_eq!(first("n").as_deref(), Some("42"));
        assert_eq!(first("x").as_deref(), Some("4.5"));
        assert_eq!(first("b").as_deref(), Some("true"));
        assert_eq!(first("z"), None);
        assert_eq!(first("a"), None);
        assert_eq!(first("missing"), None);
    }
}

//! Columnar output (Parquet, CSV): the schema of an enriched record batch and the builder that
//! fills one from a formatted batch. A CSV output is that batch written as CSV rows.
//!
//! The columns are the input's, then one typed, nullable column per feature, named after it:
//! a Parquet input's columns as read, a CSV input's columns as text, a JSONL input's records
//! as one text column `event` (JSON is not given a schema that a later record could break).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use sluice_core::Plan;

use crate::codec::format::{write_computed, write_exact, Cell, CellType, OutputLayout};
use crate::connector::parquet::{EncodedRowGroup, RowGroupEncoder};
use crate::connector::OutputFormat;
use crate::dataflow::batch::{ParsedBatch, RawBatch};

/// The name of the text column holding a JSONL input's records.
pub const EVENT_COLUMN: &str = "event";

/// What the input part of a columnar output is.
#[derive(Debug, Clone)]
pub enum InputColumns {
    /// A Parquet input's columns, as read.
    Parquet(SchemaRef),
    /// A CSV input's columns (its header), as text.
    Csv(Vec<String>),
    /// A JSONL input: each record's JSON text in one column, [`EVENT_COLUMN`].
    Json,
}

/// The schema of a columnar output and how each column is filled.
#[derive(Debug, Clone)]
pub struct ColumnLayout {
    schema: SchemaRef,
    input: InputColumns,
    types: Vec<CellType>,
    format: OutputFormat,
    /// A CSV output: whether the run writes the header row (it starts an empty output).
    header: bool,
    /// A Parquet output: what encodes its row groups.
    encoder: Option<Arc<RowGroupEncoder>>,
}

impl ColumnLayout {
    /// The layout of `plan`'s output after `input`'s columns. Fails when a feature has the
    /// name of an input column.
    pub fn new(
        plan: &Plan,
        input: InputColumns,
        format: OutputFormat,
    ) -> Result<ColumnLayout, String> {
        let mut fields: Vec<FieldRef> = match &input {
            InputColumns::Parquet(schema) => schema.fields().iter().cloned().collect(),
            InputColumns::Csv(header) => header
                .iter()
                .map(|h| Arc::new(Field::new(h, DataType::Utf8, true)))
                .collect(),
            InputColumns::Json => vec![Arc::new(Field::new(EVENT_COLUMN, DataType::Utf8, false))],
        };
        let outputs = OutputLayout::new(plan).output_types(plan);
        let mut types = Vec::with_capacity(outputs.len());
        for (name, ty) in outputs {
            if fields.iter().any(|f| f.name() == &name) {
                return Err(format!(
                    "the feature `{name}` has the name of an input column; a columnar output \
                     holds both, so rename the feature"
                ));
            }
            let data_type = match ty {
                CellType::Int => DataType::Int64,
                CellType::Float => DataType::Float64,
                CellType::Bool => DataType::Boolean,
                CellType::Text => DataType::Utf8,
            };
            fields.push(Arc::new(Field::new(name, data_type, true)));
            types.push(ty);
        }
        if format == OutputFormat::Csv {
            if let Some(f) = fields.iter().find(|f| f.data_type().is_nested()) {
                return Err(format!(
                    "a CSV output cannot hold the column `{}` of type {}: write JSONL or \
                     Parquet",
                    f.name(),
                    f.data_type()
                ));
            }
        }
        Ok(ColumnLayout {
            schema: Arc::new(Schema::new(fields)),
            input,
            types,
            format,
            header: true,
            encoder: None,
        })
    }

    /// The same layout, writing a CSV header row or not (a resumed run goes on after it).
    pub fn with_header(mut self, header: bool) -> Self {
        self.header = header;
        self
    }

    /// The same layout, encoding Parquet row groups with `encoder` (the sink's).
    pub fn with_encoder(mut self, encoder: Option<Arc<RowGroupEncoder>>) -> Self {
        self.encoder = encoder;
        self
    }

    /// Encodes `batch` as a Parquet row group.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<EncodedRowGroup, String> {
        let encoder = self
            .encoder
            .as_ref()
            .ok_or("the Parquet output has no encoder")?;
        encoder.encode(batch).map_err(|e| e.to_string())
    }

    /// What the output is written as.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Appends `batch` as CSV rows, after the header row for the run's first batch (`seq` 0)
    /// when the run writes one.
    pub(crate) fn write_csv(
        &self,
        batch: &RecordBatch,
        seq: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let header = self.header && seq == 0;
        let mut writer = arrow_csv::WriterBuilder::new()
            .with_header(header)
            .build(out);
        writer.write(batch).map_err(|e| e.to_string())
    }

    /// The output's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// A builder for a batch of up to `rows` enriched events.
    pub(crate) fn builder(&self, rows: usize) -> BatchBuilder<'_> {
        let features = self
            .types
            .iter()
            .map(|ty| match ty {
                CellType::Int => Column::Int(Int64Builder::with_capacity(rows)),
                CellType::Float => Column::Float(Float64Builder::with_capacity(rows)),
                CellType::Bool => Column::Bool(BooleanBuilder::with_capacity(rows)),
                CellType::Text => Column::Text(StringBuilder::with_capacity(rows, rows * 8)),
            })
            .collect();
        let text_inputs = match &self.input {
            InputColumns::Parquet(_) => 0,
            InputColumns::Csv(header) => header.len(),
            InputColumns::Json => 1,
        };
        BatchBuilder {
            layout: self,
            kept: Vec::with_capacity(rows),
            features,
            inputs: (0..text_inputs)
                .map(|_| StringBuilder::with_capacity(rows, rows * 16))
                .collect(),
            scratch: Vec::new(),
        }
    }
}

/// One feature column being built.
enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
}

/// Builds the record batch of one formatted batch: the caller adds each enriched event
/// ([`BatchBuilder::add_event`]) and each of its output values ([`BatchBuilder::add_cell`]).
pub(crate) struct BatchBuilder<'l> {
    layout: &'l ColumnLayout,
    /// The events added, by their index in the parsed batch.
    kept: Vec<u32>,
    features: Vec<Column>,
    /// The input's text columns (CSV, JSONL).
    inputs: Vec<StringBuilder>,
    scratch: Vec<u8>,
}

impl BatchBuilder<'_> {
    /// Adds the input columns of event `event` of `batch`.
    pub(crate) fn add_event(&mut self, batch: &ParsedBatch, event: usize) {
        self.kept.push(event as u32);
        match (&self.layout.input, &batch.raw) {
            (InputColumns::Parquet(_), _) => {}
            (InputColumns::Csv(_), RawBatch::Csv(rows)) => {
                let fields = rows.get(event).and_then(|r| r.fields.as_ref().ok());
                for (i, column) in self.inputs.iter_mut().enumerate() {
                    match fields.and_then(|f| f.get(i)).filter(|c| !c.is_empty()) {
                        Some(cell) => column.append_value(String::from_utf8_lossy(cell)),
                        None => column.append_null(),
                    }
                }
            }
            (_, _) => {
                let body = batch.bytes(batch.events[event].body);
                self.scratch.clear();
                self.scratch.extend_from_slice(body);
                self.scratch.push(b'}');
                if let Some(column) = self.inputs.first_mut() {
                    column.append_value(String::from_utf8_lossy(&self.scratch));
                }
            }
        }
    }

    /// Adds output `i`'s value of the event added last.
    pub(crate) fn add_cell(&mut self, i: usize, cell: Cell<'_>) {
        match (&mut self.features[i], cell) {
            (Column::Int(b), Cell::Int(n)) => b.append_value(n as i64),
            (Column::Int(b), _) => b.append_null(),
            (Column::Float(b), Cell::Num(v) | Cell::Exact(v)) => b.append_value(v),
            (Column::Float(b), Cell::Int(n)) => b.append_value(n as f64),
            (Column::Float(b), Cell::Number(text)) => {
                match std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()) {
                    Some(v) => b.append_value(v),
                    None => b.append_null(),
                }
            }
            (Column::Float(b), _) => b.append_null(),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Bool(b), _) => b.append_null(),
            (Column::Text(b), Cell::Null) => b.append_null(),
            (Column::Text(b), cell) => {
                self.scratch.clear();
                match cell {
                    Cell::Str(text) | Cell::Number(text) | Cell::Json(text) => {
                        self.scratch.extend_from_slice(text)
                    }
                    Cell::Int(n) => self
                        .scratch
                        .extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
                    Cell::Num(v) => write_computed(&mut self.scratch, v),
                    Cell::Exact(v) => write_exact(&mut self.scratch, v),
                    Cell::Bool(v) => {
                        self.scratch
                            .extend_from_slice(if v { b"true" } else { b"false" })
                    }
                    Cell::Null => {}
                }
                b.append_value(String::from_utf8_lossy(&self.scratch));
            }
        }
    }

    /// The record batch of the events added.
    pub(crate) fn finish(self, batch: &ParsedBatch) -> Result<RecordBatch, String> {
        let mut columns: Vec<ArrayRef> = match (&self.layout.input, &batch.columns) {
            // Every row kept (the usual case): the columns as read, not copied.
            (InputColumns::Parquet(_), Some(input)) if self.kept.len() == input.num_rows() => {
                input.columns().to_vec()
            }
            (InputColumns::Parquet(_), Some(input)) => {
                let rows = UInt32Array::from(self.kept);
                arrow_select::take::take_record_batch(input, &rows)
                    .map_err(|e| e.to_string())?
                    .columns()
                    .to_vec()
            }
            (InputColumns::Parquet(schema), None) => {
                // A row group that could not be read: all its rows are dead letters.
                schema
                    .fields()
                    .iter()
                    .map(|f| arrow_array::new_empty_array(f.data_type()))
                    .collect()
            }
            _ => self
                .inputs
                .into_iter()
                .map(|mut b| Arc::new(b.finish()) as ArrayRef)
                .collect(),
        };
        for column in self.features {
            columns.push(match column {
                Column::Int(mut b) => Arc::new(b.finish()),
                Column::Float(mut b) => Arc::new(b.finish()),
                Column::Bool(mut b) => Arc::new(b.finish()),
                Column::Text(mut b) => Arc::new(b.finish()),
            });
        }
        RecordBatch::try_new(Arc::clone(&self.layout.schema), columns).map_err(|e| e.to_string())
    }
}

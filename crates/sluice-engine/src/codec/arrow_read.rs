//! Reading a record's wanted fields straight from Arrow columns (a decoded Parquet row group),
//! as the JSON scanners capture them: a column is found by its path through struct columns; a
//! null struct on the way makes the field missing, a null leaf makes it null.
//!
//! Only plain types are read here (integers, doubles, booleans, strings, and structs and lists
//! as "an object" and "an array"); a row group with any other wanted type goes through JSON
//! text instead, so that every type reads exactly as its JSON form would.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;
use sluice_core::FieldPath;

use crate::codec::field::Captured;

/// How a leaf column is read.
#[derive(Debug, Clone, Copy)]
enum Kind {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F64,
    Bool,
    Utf8,
    LargeUtf8,
    Utf8View,
    Object,
    Array,
    Null,
}

impl Kind {
    fn of(data_type: &DataType) -> Option<Kind> {
        Some(match data_type {
            DataType::Int8 => Kind::I8,
            DataType::Int16 => Kind::I16,
            DataType::Int32 => Kind::I32,
            DataType::Int64 => Kind::I64,
            DataType::UInt8 => Kind::U8,
            DataType::UInt16 => Kind::U16,
            DataType::UInt32 => Kind::U32,
            DataType::UInt64 => Kind::U64,
            DataType::Float64 => Kind::F64,
            DataType::Boolean => Kind::Bool,
            DataType::Utf8 => Kind::Utf8,
            DataType::LargeUtf8 => Kind::LargeUtf8,
            DataType::Utf8View => Kind::Utf8View,
            DataType::Struct(_) | DataType::Map(..) => Kind::Object,
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => Kind::Array,
            DataType::Null => Kind::Null,
            _ => return None,
        })
    }
}

/// Where one wanted field is in a batch.
#[derive(Debug)]
struct Leaf {
    /// The struct columns on the way (a null one makes the field missing).
    parents: Vec<ArrayRef>,
    array: ArrayRef,
    kind: Kind,
}

/// The wanted fields of a batch, by capture slot.
#[derive(Debug)]
pub(crate) struct ColumnReader {
    leaves: Vec<Option<Leaf>>,
}

impl ColumnReader {
    /// Finds each of `paths` in `batch`; `None` when one has a type read only through JSON.
    pub(crate) fn new(batch: &RecordBatch, paths: &[FieldPath]) -> Option<ColumnReader> {
        let mut leaves = Vec::with_capacity(paths.len());
        for path in paths {
            leaves.push(find(batch, path.keys())?);
        }
        Some(ColumnReader { leaves })
    }

    /// The same fields over rows `offset..offset + len` (row 0 of the slice is `offset`).
    pub(crate) fn slice(&self, offset: usize, len: usize) -> ColumnReader {
        let leaves = self
            .leaves
            .iter()
            .map(|leaf| {
                leaf.as_ref().map(|l| Leaf {
                    parents: l.parents.iter().map(|p| p.slice(offset, len)).collect(),
                    array: l.array.slice(offset, len),
                    kind: l.kind,
                })
            })
            .collect();
        ColumnReader { leaves }
    }

    /// Captures row `row`'s fields into `caps` (strings' text appended to `text`).
    pub(crate) fn capture(&self, row: usize, caps: &mut [Captured], text: &mut Vec<u8>) {
        for (cap, leaf) in caps.iter_mut().zip(&self.leaves) {
            *cap = match leaf {
                None => Captured::Missing,
                Some(leaf) => read(leaf, row, text),
            };
        }
    }
}

/// The leaf at `keys` of `batch`: `Some(None)` when it is not there (always missing),
/// `None` when its type is not read here.
fn find(batch: &RecordBatch, keys: &[String]) -> Option<Option<Leaf>> {
    let (first, rest) = keys.split_first()?;
    let Some(mut array) = batch.column_by_name(first).cloned() else {
        return Some(None);
    };
    let mut parents = Vec::new();
    for key in rest {
        let Some(child) = array
            .as_struct_opt()
            .and_then(|s: &StructArray| s.column_by_name(key))
            .cloned()
        else {
            // A path into a scalar, or a key the struct does not have: always missing.
            return match array.data_type() {
                DataType::Struct(_) => Some(None),
                _ if Kind::of(array.data_type()).is_some() => Some(None),
                _ => None,
            };
        };
        parents.push(array);
        array = child;
    }
    let kind = Kind::of(array.data_type())?;
    Some(Some(Leaf {
        parents,
        array,
        kind,
    }))
}

fn read(leaf: &Leaf, row: usize, text: &mut Vec<u8>) -> Captured {
    if leaf.parents.iter().any(|p| p.is_null(row)) {
        return Captured::Missing;
    }
    let a = &leaf.array;
    if a.is_null(row) {
        return Captured::Null;
    }
    let int = |v: i64| Captured::Int(v);
    match leaf.kind {
        Kind::I8 => int(a.as_primitive::<Int8Type>().value(row).into()),
        Kind::I16 => int(a.as_primitive::<Int16Type>().value(row).into()),
        Kind::I32 => int(a.as_primitive::<Int32Type>().value(row).into()),
        Kind::I64 => int(a.as_primitive::<Int64Type>().value(row)),
        Kind::U8 => int(a.as_primitive::<UInt8Type>().value(row).into()),
        Kind::U16 => int(a.as_primitive::<UInt16Type>().value(row).into()),
        Kind::U32 => int(a.as_primitive::<UInt32Type>().value(row).into()),
        Kind::U64 => {
            let v = a.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v).map_or(Captured::Float(v as f64), Captured::Int)
        }
        Kind::F64 => float(a.as_primitive::<Float64Type>().value(row)),
        Kind::Bool => Captured::Bool(a.as_boolean().value(row)),
        Kind::Utf8 => str(a.as_string::<i32>().value(row), text),
        Kind::LargeUtf8 => str(a.as_string::<i64>().value(row), text),
        Kind::Utf8View => str(a.as_string_view().value(row), text),
        Kind::Object => Captured::Other("an object"),
        Kind::Array => Captured::Other("an array"),
        Kind::Null => Captured::Null,
    }
}

/// A float as JSON text would give it: not a number or an infinity has no JSON form (null).
fn float(v: f64) -> Captured {
    if v.is_finite() {
        Captured::Float(v)
    } else {
        Captured::Null
    }
}

fn str(value: &str, text: &mut Vec<u8>) -> Captured {
    let start = text.len();
    text.extend_from_slice(value.as_bytes());
    Captured::Str(start, text.len())
}

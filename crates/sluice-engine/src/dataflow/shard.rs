//! A shard: owns the key groups routed to it and applies their updates through its backend.

use sluice_core::{group_of, FeatureValue, FieldObs, Plan};

use crate::dataflow::batch::FieldKind;
use crate::dataflow::router::RoutedBatch;
use crate::error::Result;
use crate::state::{StateBackend, Update};

/// One shard's answer for a batch: the feature values of its items, in item order
/// (`plan.keys[item.key_spec].features.len()` values per item), and the text their
/// [`FeatureValue::Text`] values point into.
#[derive(Debug, Clone, Default)]
pub struct ShardValues {
    /// The values.
    pub values: Vec<FeatureValue>,
    /// Canonical bytes of kept strings (`first`, `last`, `lag`).
    pub text: Vec<u8>,
}

/// Applies shard `shard`'s items of a routed batch and returns their feature values.
pub fn process<B: StateBackend>(
    plan: &Plan,
    backend: &mut B,
    batch: &RoutedBatch,
    shard: usize,
) -> Result<ShardValues> {
    let items = &batch.items[shard];
    let parsed = &batch.parsed;
    let n_keys = plan.keys.len();
    let n_fields = plan.fields.len();
    let mut fields: Vec<FieldObs<'_>> = Vec::with_capacity(items.len() * n_fields);
    for item in items {
        let base = item.event as usize * n_fields;
        fields.extend(
            parsed.fields[base..base + n_fields]
                .iter()
                .map(|slot| FieldObs {
                    present: slot.kind != FieldKind::Missing,
                    num: slot.num,
                    bytes: if slot.kind == FieldKind::Missing {
                        &[]
                    } else {
                        &parsed.arena[slot.start..slot.end]
                    },
                }),
        );
    }
    let updates: Vec<Update<'_>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let e = item.event as usize;
            let key = &parsed.keys[e * n_keys + item.key_spec as usize];
            Update {
                key_spec: item.key_spec as usize,
                hash: key.hash,
                group: batch
                    .groups
                    .get(e)
                    .copied()
                    .filter(|&g| g != u32::MAX)
                    .unwrap_or_else(|| group_of(key.hash)),
                key: &parsed.arena[key.start..key.end],
                ts: parsed.events[e].ts,
                floor: batch.floors[e],
                fields: &fields[i * n_fields..(i + 1) * n_fields],
                matched: parsed.matched.get(e).copied().unwrap_or(0),
                id: plan.id_field.and_then(|f| {
                    let id = &fields[i * n_fields + f];
                    id.present.then(|| sluice_core::id_token(id.bytes))
                }),
            }
        })
        .collect();
    let values: usize = items
        .iter()
        .map(|item| plan.keys[item.key_spec as usize].features.len())
        .sum();
    let mut out = Vec::with_capacity(values);
    backend.apply(plan, &updates, &mut out)?;
    Ok(ShardValues {
        values: out,
        text: backend.take_text(),
    })
}

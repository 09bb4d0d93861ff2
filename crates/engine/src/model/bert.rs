//! BERT (and MiniLM, which is BERT-shaped): `bert.` prefix or none, pooler + classifier head.

use super::{FamilySpec, HeadActivation, HeadLayer, LayerNames};

pub(crate) fn spec() -> FamilySpec {
    FamilySpec {
        layer: |p, i| {
            let b = format!("{p}encoder.layer.{i}.");
            LayerNames {
                q: format!("{b}attention.self.query"),
                k: format!("{b}attention.self.key"),
                v: format!("{b}attention.self.value"),
                o: format!("{b}attention.output.dense"),
                ln1: format!("{b}attention.output.LayerNorm"),
                ff1: format!("{b}intermediate.dense"),
                ff2: format!("{b}output.dense"),
                ln2: format!("{b}output.LayerNorm"),
            }
        },
        has_token_types: true,
        // Positions count from 0.
        position_offset: |_| 0,
        head: |p| {
            vec![
                HeadLayer::new(format!("{p}pooler.dense"), HeadActivation::Tanh, false),
                HeadLayer::new("classifier".into(), HeadActivation::None, true),
            ]
        },
    }
}

//! DistilBERT: its own layer names, no token-type embeddings, pre_classifier + ReLU head.

use super::{FamilySpec, HeadActivation, HeadLayer, LayerNames};

pub(crate) fn spec() -> FamilySpec {
    FamilySpec {
        layer: |p, i| {
            let b = format!("{p}transformer.layer.{i}.");
            LayerNames {
                q: format!("{b}attention.q_lin"),
                k: format!("{b}attention.k_lin"),
                v: format!("{b}attention.v_lin"),
                o: format!("{b}attention.out_lin"),
                ln1: format!("{b}sa_layer_norm"),
                ff1: format!("{b}ffn.lin1"),
                ff2: format!("{b}ffn.lin2"),
                ln2: format!("{b}output_layer_norm"),
            }
        },
        has_token_types: false,
        position_offset: |_| 0,
        head: |_| {
            vec![
                HeadLayer::new("pre_classifier".into(), HeadActivation::Relu, false),
                HeadLayer::new("classifier".into(), HeadActivation::None, true),
            ]
        },
    }
}

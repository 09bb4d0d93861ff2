//! RoBERTa (also XLM-R, CamemBERT): BERT's layer names under `roberta.`, positions offset
//! past the padding index, and a dense + out_proj classification head. (candle's `bert`
//! module loads these weights but counts positions from 0, which is silently wrong.)

use super::{FamilySpec, HeadActivation, HeadLayer};

pub(crate) fn spec() -> FamilySpec {
    let bert = super::bert::spec();
    FamilySpec {
        layer: bert.layer,
        has_token_types: true,
        // HF `create_position_ids_from_input_ids`: non-padding tokens get
        // padding_idx + 1 + their index.
        position_offset: |cfg| cfg.pad_token_id as usize + 1,
        head: |_| {
            vec![
                HeadLayer::new("classifier.dense".into(), HeadActivation::Tanh, false),
                HeadLayer::new("classifier.out_proj".into(), HeadActivation::None, true),
            ]
        },
    }
}

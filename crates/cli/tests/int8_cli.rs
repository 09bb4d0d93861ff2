//! `int8:` from the command line: MiniLM-L6 in f32 and with dynamic int8 quantisation, side
//! by side in one `compare` with the paired test between them, each with its own store
//! identity (a rerun reuses both).

mod common;

use common::{json_of, root};

#[test]
fn f32_and_int8_minilm_compare_side_by_side_and_resume_separately() {
    let dir = tempfile::tempdir().unwrap();
    let minilm = root().join("assets/models/all-MiniLM-L6-v2");
    let f32_spec = format!("f32={}", minilm.display());
    let int8_spec = format!("int8=int8:{}", minilm.display());
    let data = root().join("assets/data/rotten_tomatoes_binary.jsonl");
    let db = dir.path().join("s.db");
    let args = [
        "compare",
        "--model",
        &f32_spec,
        "--model",
        &int8_spec,
        "--data",
        data.to_str().unwrap(),
        "--task",
        "probe",
        "--limit",
        "60",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "json",
        "--quiet",
    ];
    let doc = json_of(&args);
    let models = doc["models"].as_array().unwrap();
    let by = |name: &str| models.iter().find(|m| m["name"] == name).unwrap();
    assert_eq!(by("f32")["backend"], "lmcompare-native");
    assert!(
        by("int8")["backend"]
            .as_str()
            .unwrap()
            .contains("int8 linear layers"),
        "{}",
        by("int8")["backend"]
    );
    for m in models {
        assert!(
            m["metrics"]["accuracy"].as_f64().unwrap() > 0.5,
            "{}",
            m["name"]
        );
    }
    let pair = &doc["pairwise"][0];
    assert!(pair["mcnemar_p"].as_f64().is_some(), "{pair}");
    let again = json_of(&args);
    assert_eq!(again["run"]["resumed"], true);
    for m in again["models"].as_array().unwrap() {
        assert_eq!(m["computed_examples"], 0, "{}", m["name"]);
    }
}

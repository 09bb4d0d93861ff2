use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
fn main() {
    let p = "assets/models/gemma-3-270m-q4_k_m.gguf";
    let mut f = std::fs::File::open(p).unwrap();
    let c = Content::read(&mut f).unwrap();
    for name in [
        "blk.0.attn_k.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
    ] {
        let q = c.tensor(&mut f, name, &Device::Cpu).unwrap();
        let v: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        let s2: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        println!(
            "{name} {:?} n={} sum={s:.6} sumsq={s2:.6} first={:?} at1000={:?}",
            q.dtype(),
            v.len(),
            &v[..4],
            &v[1000..1004]
        );
    }
}

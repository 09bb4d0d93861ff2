//! A bounded walk over a GGUF header before candle's reader sees it.
//!
//! candle's `gguf_file::Content::read` trusts every length and count in the file: it allocates
//! `vec![0; len]` for a string length of 2⁵⁰ (an abort, not an error) and divides by an
//! alignment of zero. This walk reads the same structure, checking each length and count
//! against the bytes that remain and each tensor's extent against the file, so a corrupt file
//! becomes a message naming the field and its byte offset and candle only ever reads a header
//! that fits.

use candle_core::quantized::GgmlDType;

/// Nested arrays are legal GGUF but no real file nests more than one level; the bound keeps a
/// crafted file from recursing the stack away.
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

struct Walk<'a> {
    bytes: &'a [u8],
    pos: usize,
    wide: bool,
}

impl Walk<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes but the file has {} left: the file is truncated or corrupt",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length or count field: 32 bits in GGUF v1, 64 bits after.
    fn count(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    /// A count of items that each take at least `min_item` bytes, checked against what remains
    /// before anyone allocates for it.
    fn bounded_count(&mut self, what: &str, min_item: usize) -> Result<usize, String> {
        let at = self.pos;
        let n = self.count(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_item.max(1))
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            format!(
                "{what} at byte {at} is {n}, more than the {} bytes left in the file can hold: the file is corrupt",
                self.remaining()
            )
        })
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.bounded_count(&format!("{what} length"), 1)?;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Option<u64>, String> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => 0,
        };
        if fixed > 0 {
            let at = self.pos;
            let b = self.take(fixed, &format!("value of `{key}`"))?;
            if ty == 7 && b[0] > 1 {
                return Err(format!(
                    "value of `{key}` at byte {at} is a bool stored as {}: the file is corrupt",
                    b[0]
                ));
            }
            // Only unsigned and non-negative signed integers matter (the alignment).
            let as_u64 = match ty {
                0 => Some(u64::from(b[0])),
                1 => Some(b[0] as i8).filter(|v| *v >= 0).map(|v| v as u64),
                2 => Some(u64::from(u16::from_le_bytes([b[0], b[1]]))),
                3 => Some(i16::from_le_bytes([b[0], b[1]]))
                    .filter(|v| *v >= 0)
                    .map(|v| v as u64),
                4 => Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                5 => Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .filter(|v| *v >= 0)
                    .map(|v| v as u64),
                _ => None,
            };
            return Ok(as_u64);
        }
        match ty {
            8 => {
                self.string(&format!("string value of `{key}`"))?;
            }
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "`{key}` nests arrays more than {MAX_ARRAY_DEPTH} deep: the file is corrupt"
                    ));
                }
                let at = self.pos;
                let inner = self.u32(&format!("array type of `{key}`"))?;
                if !(0..=12).contains(&inner) {
                    return Err(format!(
                        "array `{key}` at byte {at} has element type {inner}, which GGUF does not define"
                    ));
                }
                // Strings and arrays take at least their length field.
                let min_item = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 | 9 if self.wide => 8,
                    _ => 4,
                };
                let n = self.bounded_count(&format!("element count of `{key}`"), min_item)?;
                for _ in 0..n {
                    self.value(inner, key, depth + 1)?;
                }
            }
            other => {
                return Err(format!(
                    "`{key}` at byte {} has value type {other}, which GGUF does not define",
                    self.pos
                ))
            }
        }
        Ok(None)
    }
}

/// The ggml type ids candle reads.
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// ggml's names for the type ids lmcompare does not read (ggml.h's `ggml_type`), so a
/// refusal names the type as the file's maker knows it.
fn unsupported_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// Checks that every length, count and tensor extent in a GGUF file fits inside `bytes`.
pub(crate) fn check_gguf(bytes: &[u8]) -> Result<(), String> {
    let mut w = Walk {
        bytes,
        pos: 0,
        wide: true,
    };
    let magic = w.u32("the GGUF magic")?;
    if magic != 0x4655_4747 && magic != 0x4747_5546 {
        return Err(format!(
            "not a GGUF file: it starts with 0x{magic:08x}, not the GGUF magic"
        ));
    }
    let version = w.u32("the GGUF version")?;
    if !(1..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (1, 2 and 3 are)"
        ));
    }
    w.wide = version >= 2;
    let len_field = if w.wide { 8 } else { 4 };
    // A tensor info is at least a name length, n_dims, dtype and offset.
    let tensor_count = w.bounded_count("tensor count", len_field + 4 + 4 + 8)?;
    // A key-value pair is at least a key length, a value type and one byte of value.
    let kv_count = w.bounded_count("metadata count", len_field + 4 + 1)?;
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..kv_count {
        let key = w.string(&format!("metadata key {i}"))?;
        let ty = w.u32(&format!("value type of `{key}`"))?;
        let v = w.value(ty, &key, 0)?;
        // candle honours only 8/16/32-bit integer alignments, as checked here.
        if key == "general.alignment" && matches!(ty, 0..=5) {
            if let Some(a) = v {
                alignment = a;
            }
        }
    }
    if alignment == 0 {
        return Err("general.alignment is 0: the file is corrupt".to_owned());
    }
    let mut tensors = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let name = w.string(&format!("tensor name {i}"))?;
        let at = w.pos;
        let n_dims = w.u32(&format!("dimension count of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` at byte {at} has {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}: the file is corrupt"
            ));
        }
        let mut elems: u64 = 1;
        for d in 0..n_dims {
            let dim = w.count(&format!("dimension {d} of tensor `{name}`"))?;
            elems = elems.checked_mul(dim).ok_or_else(|| {
                format!(
                    "tensor `{name}` has dimensions whose product overflows: the file is corrupt"
                )
            })?;
        }
        let dtype_id = w.u32(&format!("type of tensor `{name}`"))?;
        let dtype = ggml_dtype(dtype_id).ok_or_else(|| {
            match unsupported_type_name(dtype_id) {
                Some(t) => format!(
                    "tensor `{name}` is stored as {t}, which lmcompare does not read (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K; re-quantise the model to one of those)"
                ),
                None => format!("tensor `{name}` has ggml type {dtype_id}, which is not supported"),
            }
        })?;
        let offset = w.u64(&format!("offset of tensor `{name}`"))?;
        let block = dtype.block_size() as u64;
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}` has {elems} elements, not a multiple of its {dtype:?} block of {block}"
            ));
        }
        let size = (elems / block)
            .checked_mul(dtype.type_size() as u64)
            .ok_or_else(|| format!("tensor `{name}` is too large: the file is corrupt"))?;
        tensors.push((name, offset, size));
    }
    let data_start = (w.pos as u64).div_ceil(alignment).saturating_mul(alignment);
    let file_len = bytes.len() as u64;
    for (name, offset, size) in tensors {
        let end = data_start
            .checked_add(offset)
            .and_then(|s| s.checked_add(size));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(format!(
                    "tensor `{name}` ({size} bytes at data offset {offset}) runs past the end of the {file_len}-byte file: the file is truncated or corrupt"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 file with one metadata string and one f32 tensor of `dims`.
    fn tiny(key_len: u64, dims: &[u64]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x4655_4747u32.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        b.extend_from_slice(&key_len.to_le_bytes());
        b.extend_from_slice(b"general.name");
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(b"t");
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        // An overflowing shape gets no data: the check must stop at the shape.
        let n = dims
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .unwrap_or(0);
        b.extend(std::iter::repeat_n(0u8, n as usize * 4));
        b
    }

    #[test]
    fn a_well_formed_file_passes_and_candle_agrees() {
        let b = tiny(12, &[2, 3]);
        check_gguf(&b).unwrap();
        let c = candle_core::quantized::gguf_file::Content::read(&mut std::io::Cursor::new(&b))
            .unwrap();
        assert_eq!(c.tensor_infos["t"].shape.dims(), &[3, 2]);
    }

    #[test]
    fn huge_lengths_are_errors_not_aborts() {
        for len in [u64::MAX, 1 << 50, 1 << 20] {
            let e = check_gguf(&tiny(len, &[2])).unwrap_err();
            assert!(e.contains("metadata key 0 length"), "{e}");
        }
    }

    #[test]
    fn tensors_past_the_end_and_overflowing_shapes_are_named() {
        let mut b = tiny(12, &[4]);
        b.truncate(b.len() - 1);
        assert!(check_gguf(&b).unwrap_err().contains("tensor `t`"));
        let e = check_gguf(&tiny(12, &[u64::MAX, 3])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = tiny(12, &[2, 3]);
        for n in 0..b.len() {
            assert!(check_gguf(&b[..n]).is_err(), "prefix of {n} bytes");
        }
    }
}

//! Tensors from a `model.safetensors` file, read through a memory map; the header alone
//! answers parameter counts and sizes without loading weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;

use crate::error::{EngineError, Result};

/// Model weights: a memory-mapped `model.safetensors`, or the tensors of a PyTorch
/// `pytorch_model.bin` read by a data-only pickle reader.
pub struct WeightFile {
    path: PathBuf,
    source: Source,
}

enum Source {
    Safetensors {
        mmap: Mmap,
        header_len: usize,
        metadata: Metadata,
    },
    Torch(std::collections::HashMap<String, crate::torch_pickle::TorchTensor>),
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<Self> {
        if path.extension().and_then(|e| e.to_str()) == Some("bin") {
            return Ok(WeightFile {
                path: path.to_owned(),
                source: Source::Torch(crate::torch_pickle::read_torch_checkpoint(path)?),
            });
        }
        let file = std::fs::File::open(path)
            .map_err(|e| EngineError::file(path, format!("cannot open: {e}")))?;
        // SAFETY: the file is opened read-only; lmcompare never writes model files, and a
        // concurrent external writer is outside what any model loader can defend against.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| EngineError::file(path, format!("cannot map: {e}")))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            let why = diagnose_safetensors(&mmap).unwrap_or_else(|| e.to_string());
            EngineError::file(
                path,
                format!("corrupt or truncated safetensors file: {why}"),
            )
        })?;
        // read_metadata checks offsets against each other; check them against the file.
        let data_len = mmap.len() - 8 - header_len;
        for (name, info) in metadata.tensors() {
            if info.data_offsets.1 > data_len {
                return Err(EngineError::file(
                    path,
                    format!("corrupt or truncated safetensors file: tensor `{name}` ends at byte {} but the data holds {data_len}", info.data_offsets.1),
                ));
            }
        }
        Ok(WeightFile {
            path: path.to_owned(),
            source: Source::Safetensors {
                mmap,
                header_len,
                metadata,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensors(&self) -> Vec<TensorInfo> {
        let mut v: Vec<TensorInfo> = match &self.source {
            Source::Safetensors { metadata, .. } => metadata
                .tensors()
                .into_iter()
                .map(|(name, info)| TensorInfo {
                    name,
                    dtype: format!("{:?}", info.dtype),
                    shape: info.shape.clone(),
                    bytes: info.data_offsets.1 - info.data_offsets.0,
                })
                .collect(),
            Source::Torch(t) => t
                .iter()
                .map(|(name, x)| TensorInfo {
                    name: name.clone(),
                    dtype: match x.dtype.as_str() {
                        "Float" => "F32".into(),
                        "Half" => "F16".into(),
                        "BFloat16" => "BF16".into(),
                        "Double" => "F64".into(),
                        other => other.to_uppercase(),
                    },
                    shape: x.shape.clone(),
                    bytes: x.bytes,
                })
                .collect(),
        };
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors { metadata, .. } => metadata.info(name).is_some(),
            Source::Torch(t) => t.contains_key(name),
        }
    }

    pub fn names(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect()
    }

    /// A safetensors tensor's dtype and stored bytes, checked to exist with `shape` (None for
    /// a PyTorch pickle).
    fn stored(&self, name: &str, shape: &[usize]) -> Result<Option<(Dtype, &[u8])>> {
        let Source::Safetensors {
            mmap,
            header_len,
            metadata,
        } = &self.source
        else {
            return Ok(None);
        };
        let info = metadata
            .info(name)
            .ok_or_else(|| EngineError::file(&self.path, format!("tensor `{name}` is missing")))?;
        if info.shape != shape {
            return Err(EngineError::file(
                &self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    info.shape
                ),
            ));
        }
        let start = 8 + header_len + info.data_offsets.0;
        Ok(Some((
            info.dtype,
            &mmap[start..8 + header_len + info.data_offsets.1],
        )))
    }

    fn check_count(&self, name: &str, got: usize, shape: &[usize]) -> Result<()> {
        let n: usize = shape.iter().product();
        if got != n {
            return Err(EngineError::file(
                &self.path,
                format!("tensor `{name}` holds {got} values, its shape needs {n}"),
            ));
        }
        Ok(())
    }

    /// The tensor's raw 16-bit values and whether they are bf16 (else f16), when it is stored
    /// in one of the two (None for f32 or a PyTorch pickle); checked against `shape`.
    pub fn get_16bit(&self, name: &str, shape: &[usize]) -> Result<Option<(bool, Vec<u16>)>> {
        let Some((dtype, bytes)) = self.stored(name, shape)? else {
            return Ok(None);
        };
        let bf16 = match dtype {
            Dtype::BF16 => true,
            Dtype::F16 => false,
            _ => return Ok(None),
        };
        let values: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        self.check_count(name, values.len(), shape)?;
        Ok(Some((bf16, values)))
    }

    /// The tensor as f32 (converted from f16/bf16), checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some((dtype, bytes)) = self.stored(name, shape)? else {
            let Source::Torch(t) = &self.source else {
                unreachable!("stored() answers None only for a PyTorch pickle")
            };
            let x = t.get(name).ok_or_else(|| {
                EngineError::file(&self.path, format!("tensor `{name}` is missing"))
            })?;
            if x.shape != shape {
                return Err(EngineError::file(
                    &self.path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        x.shape
                    ),
                ));
            }
            return Ok(x.data.clone());
        };
        let out = match dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<f32>>(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            other => {
                return Err(EngineError::file(
                    &self.path,
                    format!("tensor `{name}` has dtype {other:?}; supported: F32, F16, BF16"),
                ))
            }
        };
        self.check_count(name, out.len(), shape)?;
        Ok(out)
    }
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// A JSON array of non-negative integers (a header's shape or offsets).
fn u64_list(v: &serde_json::Value) -> Option<Vec<u64>> {
    v.as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}

/// What exactly is wrong with a safetensors file the `safetensors` crate refused: its
/// errors ("invalid shape, data type, or offset for tensor", "file not fully covered") do
/// not say which tensor or which bytes. `None` when this check finds nothing.
fn diagnose_safetensors(bytes: &[u8]) -> Option<String> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Some(format!(
            "{} bytes: shorter than the 8-byte header length every safetensors file starts with",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().ok()?);
    let rest = (bytes.len() - 8) as u64;
    if n > rest {
        return Some(format!(
            "the header length field says {n} bytes but only {rest} follow it"
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let v: serde_json::Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(e) => return Some(format!("the header is not valid JSON: {e}")),
    };
    let obj = v.as_object()?;
    let data_len = rest - n;
    let mut spans: Vec<(u64, u64, &str)> = Vec::new();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap_or("");
        let Some(size) = dtype_size(dtype) else {
            return Some(format!(
                "tensor `{name}` has dtype {:?}, which safetensors does not define",
                t["dtype"]
            ));
        };
        let shape = u64_list(&t["shape"]);
        let Some(shape) = shape else {
            return Some(format!(
                "tensor `{name}` has shape {}, not a list of sizes",
                t["shape"]
            ));
        };
        let offsets = u64_list(&t["data_offsets"]);
        let Some([start, end]) = offsets
            .as_deref()
            .and_then(|o| <[u64; 2]>::try_from(o).ok())
        else {
            return Some(format!(
                "tensor `{name}` has data_offsets {}, not [start, end]",
                t["data_offsets"]
            ));
        };
        if start > end || end > data_len {
            return Some(format!(
                "tensor `{name}` has data_offsets [{start}, {end}], outside the {data_len} data bytes"
            ));
        }
        let needed = shape.iter().try_fold(size, |a, &d| a.checked_mul(d));
        if needed != Some(end - start) {
            return Some(format!(
                "tensor `{name}` ({dtype} {shape:?}) needs {} bytes but its data_offsets span {}",
                needed.map_or("more than 2^64".to_owned(), |b| b.to_string()),
                end - start
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut at = 0;
    for (start, end, name) in &spans {
        if *start > at {
            return Some(format!(
                "data bytes {at}..{start} belong to no tensor (before `{name}`): a tensor is missing from the header"
            ));
        }
        if *start < at {
            return Some(format!("tensor `{name}` overlaps the tensor before it"));
        }
        at = *end;
    }
    if at < data_len {
        return Some(format!(
            "data bytes {at}..{data_len} belong to no tensor: a tensor is missing from the header, or bytes were appended"
        ));
    }
    None
}

pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((127 - 15 - shift + 1) << 23) | ((f << (shift + 13)) & 0x7f_ffff)
        }
        (31, 0) => sign | 0x7f80_0000,
        (31, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::{f16_to_f32, WeightFile};

    /// A safetensors file from a header written by hand and `data_len` zero bytes.
    fn file(header: &str, data_len: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data_len));
        std::fs::write(&path, b).unwrap();
        (dir, path)
    }

    fn open_err(header: &str, data_len: usize) -> String {
        let (_d, p) = file(header, data_len);
        match WeightFile::open(&p) {
            Ok(_) => panic!("{header} opened"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn safetensors_errors_name_the_tensor_and_the_bytes() {
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        let (_d, p) = file(ok, 12);
        assert_eq!(WeightFile::open(&p).unwrap().names().len(), 2);
        let e = open_err(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            12,
        );
        assert!(
            e.contains("tensor `a`") && e.contains("needs 12 bytes"),
            "{e}"
        );
        let e = open_err(
            r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        );
        assert!(e.contains("tensor `a` has dtype"), "{e}");
        // A tensor entry removed: its bytes belong to no tensor.
        let e = open_err(
            r#"{"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
            12,
        );
        assert!(e.contains("bytes 0..8 belong to no tensor"), "{e}");
        let e = open_err(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            9,
        );
        assert!(e.contains("bytes 8..9 belong to no tensor"), "{e}");
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }
}

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
            EngineError::file(path, format!("corrupt or truncated safetensors file: {e}"))
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

    /// The tensor as f32 (converted from f16/bf16), checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (mmap, header_len, metadata) = match &self.source {
            Source::Safetensors {
                mmap,
                header_len,
                metadata,
            } => (mmap, *header_len, metadata),
            Source::Torch(t) => {
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
            }
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
        let bytes = &mmap[start..8 + header_len + info.data_offsets.1];
        let n: usize = shape.iter().product();
        let out = match info.dtype {
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
        if out.len() != n {
            return Err(EngineError::file(
                &self.path,
                format!(
                    "tensor `{name}` holds {} values, its shape needs {n}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
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
    use super::f16_to_f32;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }
}

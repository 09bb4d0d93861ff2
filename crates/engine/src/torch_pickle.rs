//! Reads the tensors of a PyTorch `pytorch_model.bin` (the zip format `torch.save` writes
//! since 1.6) without running any Python: a small pickle interpreter that only builds data
//! (dicts, tuples, numbers, strings, tensor references) and refuses every other callable, so
//! a malicious checkpoint cannot execute code.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone)]
enum Value {
    /// None, booleans and floats: present in checkpoints (e.g. requires_grad), never needed.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    Storage {
        key: String,
        dtype: String,
    },
    Tensor(TensorRef),
    Mark,
}

#[derive(Debug, Clone)]
struct TensorRef {
    key: String,
    dtype: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// A tensor read from the archive: shape, dtype name and values as f32.
pub struct TorchTensor {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub data: Vec<f32>,
    pub bytes: usize,
}

/// Deeper than any state dict nests (dict → tensor arguments → shape): a deeper value is
/// a corrupt or hostile pickle, and refusing it keeps recursion (clone, drop) bounded.
const MAX_DEPTH: usize = 32;
/// Values that memo references may copy in all: a small pickle that refers to its own
/// memo entries can otherwise grow exponentially ("billion laughs").
const MAX_EXPANDED: usize = 1 << 22;

fn deeper_than(v: &Value, levels: usize) -> bool {
    match v {
        Value::Tuple(t) | Value::List(t) => {
            levels == 0 || t.iter().any(|x| deeper_than(x, levels - 1))
        }
        Value::Dict(d) => {
            levels == 0
                || d.iter()
                    .any(|(k, x)| deeper_than(k, levels - 1) || deeper_than(x, levels - 1))
        }
        _ => false,
    }
}

fn count_values(v: &Value) -> usize {
    1 + match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(count_values).sum(),
        Value::Dict(d) => d
            .iter()
            .map(|(k, x)| count_values(k) + count_values(x))
            .sum(),
        _ => 0,
    }
}

/// A value about to go inside a container: one level less than the limit.
fn nestable(v: &Value) -> std::result::Result<(), String> {
    if deeper_than(v, MAX_DEPTH - 1) {
        Err(format!(
            "the pickle nests deeper than {MAX_DEPTH} levels; a state dict never does"
        ))
    } else {
        Ok(())
    }
}

fn ints(v: &Value) -> Option<Vec<usize>> {
    match v {
        Value::Tuple(t) | Value::List(t) => t
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Some(*i as usize),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    expanded: usize,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("truncated pickle")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (a GLOBAL without its newline)")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn memo_put(&mut self, i: u32) -> std::result::Result<(), String> {
        let top = self.stack.last().ok_or("memo of empty stack")?;
        self.expanded += count_values(top);
        if self.expanded > MAX_EXPANDED {
            return Err(format!(
                "the pickle's memo copies more than {MAX_EXPANDED} values; a state dict never does"
            ));
        }
        let top = top.clone();
        self.memo.insert(i, top);
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> std::result::Result<Value, String> {
        let v = self.memo.get(&i).ok_or("bad memo reference")?;
        self.expanded += count_values(v);
        if self.expanded > MAX_EXPANDED {
            return Err(format!(
                "the pickle's memo references copy more than {MAX_EXPANDED} values; a state dict never does"
            ));
        }
        Ok(v.clone())
    }
    fn pop(&mut self) -> std::result::Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_owned())
    }
    /// The items above the last MARK, each checked to fit inside a container.
    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("pickle MARK missing")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        items.iter().try_for_each(nestable)?;
        Ok(items)
    }
    fn string(&mut self, n: usize) -> std::result::Result<Value, String> {
        Ok(Value::Str(
            String::from_utf8_lossy(self.take(n)?).into_owned(),
        ))
    }

    fn reduce(&mut self, func: Value, args: Value) -> std::result::Result<Value, String> {
        let Value::Global(name) = func else {
            return Err("pickle REDUCE on a non-callable".into());
        };
        let args = match args {
            Value::Tuple(a) => a,
            _ => return Err("pickle REDUCE without an argument tuple".into()),
        };
        match name.as_str() {
            "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let (key, dtype) = match args.first() {
                    Some(Value::Storage { key, dtype }) => (key.clone(), dtype.clone()),
                    _ => return Err("tensor without storage".into()),
                };
                let offset = match args.get(1) {
                    Some(Value::Int(o)) => {
                        usize::try_from(*o).map_err(|_| format!("tensor storage offset {o}"))?
                    }
                    _ => 0,
                };
                let shape = args.get(2).and_then(ints).ok_or("tensor without shape")?;
                let stride = args.get(3).and_then(ints).ok_or("tensor without stride")?;
                if stride.len() != shape.len() {
                    return Err(format!(
                        "tensor shape {shape:?} with {} strides",
                        stride.len()
                    ));
                }
                Ok(Value::Tensor(TensorRef {
                    key,
                    dtype,
                    offset,
                    shape,
                    stride,
                }))
            }
            "torch._utils._rebuild_parameter" => args
                .into_iter()
                .next()
                .ok_or_else(|| "empty parameter".into()),
            other => Err(format!(
                "refusing to call `{other}`: only tensors and dicts are read from a checkpoint"
            )),
        }
    }

    fn run(&mut self) -> std::result::Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'(' => self.stack.push(Value::Mark),
                b'N' | 0x88 | 0x89 => self.stack.push(Value::Scalar),
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, byte) in b.iter().enumerate().take(8) {
                        v |= (*byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Scalar);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c | b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let at = self
                        .stack
                        .len()
                        .checked_sub(n)
                        .ok_or("pickle stack underflow")?;
                    let items = self.stack.split_off(at);
                    items.iter().try_for_each(nestable)?;
                    self.stack.push(Value::Tuple(items));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let Value::Tuple(t) = pid else {
                        return Err("bad persistent id".into());
                    };
                    let dtype = match t.get(1) {
                        Some(Value::Global(g)) => g.rsplit('.').next().unwrap_or("").to_owned(),
                        _ => String::new(),
                    };
                    let key = match t.get(2) {
                        Some(Value::Str(k)) => k.clone(),
                        _ => return Err("persistent id without a storage key".into()),
                    };
                    self.stack.push(Value::Storage { key, dtype });
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: state for the object below (OrderedDict metadata); not needed.
                    self.pop()?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    nestable(&k)?;
                    nestable(&v)?;
                    if let Some(Value::Dict(d)) = self.stack.last_mut() {
                        d.push((k, v));
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if let Some(Value::Dict(d)) = self.stack.last_mut() {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    nestable(&v)?;
                    if let Some(Value::List(l)) = self.stack.last_mut() {
                        l.push(v);
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    if let Some(Value::List(l)) = self.stack.last_mut() {
                        l.extend(items);
                    }
                }
                b'.' => return self.pop(),
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }
}

fn element_size(dtype: &str) -> Option<usize> {
    match dtype {
        "FloatStorage" => Some(4),
        "HalfStorage" | "BFloat16Storage" => Some(2),
        "DoubleStorage" | "LongStorage" => Some(8),
        "IntStorage" => Some(4),
        _ => None,
    }
}

/// All tensors of a `pytorch_model.bin`, converted to f32.
pub fn read_torch_checkpoint(path: &Path) -> Result<HashMap<String, TorchTensor>> {
    let bad = |m: String| EngineError::file(path, m);
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not a PyTorch zip checkpoint (torch.save ≥ 1.6), or truncated: {e}"
        ))
    })?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_owned))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| bad("no data.pkl in the checkpoint".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| bad(format!("cannot read data.pkl: {e}")))?;
    let mut m = Machine {
        data: &pkl,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        expanded: 0,
    };
    let root = m
        .run()
        .map_err(|e| bad(format!("cannot read the checkpoint's pickle: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(bad("the checkpoint is not a state dict".into()));
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = HashMap::new();
    for (k, v) in items {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !storages.contains_key(&t.key) {
            let mut buf = Vec::new();
            zip.by_name(&format!("{prefix}data/{}", t.key))
                .and_then(|mut f| f.read_to_end(&mut buf).map_err(Into::into))
                .map_err(|e| {
                    bad(format!(
                        "tensor `{name}`: storage {} unreadable: {e}",
                        t.key
                    ))
                })?;
            storages.insert(t.key.clone(), buf);
        }
        let raw = &storages[&t.key];
        let size = element_size(&t.dtype).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` has unsupported storage {}",
                t.dtype
            ))
        })?;
        // Every element's position is offset + Σ index·stride; the largest must fit the
        // storage, and the count must too (unless a stride of 0 repeats elements), before
        // anything is allocated from numbers the file supplied.
        let past_storage = || {
            bad(format!(
                "tensor `{name}` (shape {:?}, strides {:?}, offset {}) reaches past its storage of {} bytes: corrupt checkpoint",
                t.shape, t.stride, t.offset, raw.len()
            ))
        };
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(past_storage)?;
        if numel > 0 {
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |a, (&d, &s)| {
                    a.checked_add((d - 1).checked_mul(s)?)
                })
                .ok_or_else(past_storage)?;
            let end = last
                .checked_add(1)
                .and_then(|n| n.checked_mul(size))
                .ok_or_else(past_storage)?;
            let repeats = t.stride.contains(&0);
            if end > raw.len() || (!repeats && numel.saturating_mul(size) > raw.len()) {
                return Err(past_storage());
            }
            if repeats && numel > (1 << 28) {
                return Err(past_storage());
            }
        }
        let read = |i: usize| -> Option<f32> {
            let b = raw.get(i * size..(i + 1) * size)?;
            Some(match t.dtype.as_str() {
                "FloatStorage" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                "HalfStorage" => crate::weights::f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
                "BFloat16Storage" => {
                    f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
                }
                "DoubleStorage" => f64::from_le_bytes(b.try_into().ok()?) as f32,
                "LongStorage" => i64::from_le_bytes(b.try_into().ok()?) as f32,
                _ => i32::from_le_bytes(b.try_into().ok()?) as f32,
            })
        };
        let mut data = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            data.push(read(at).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` reaches past its storage: truncated checkpoint"
                ))
            })?);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out.insert(
            name,
            TorchTensor {
                bytes: numel * size,
                shape: t.shape,
                dtype: t.dtype.trim_end_matches("Storage").to_owned(),
                data,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> std::result::Result<Value, String> {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            expanded: 0,
        }
        .run()
    }

    #[test]
    fn a_global_without_its_newline_is_truncated_not_a_panic() {
        assert!(run(b"ctorch\n_utils").unwrap_err().contains("truncated"));
        assert!(run(b"c").unwrap_err().contains("truncated"));
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        // `]` × n then `a` × (n-1): each list appended into the one below it.
        let n = 10_000;
        let mut p = vec![b']'; n];
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        assert!(run(&p).unwrap_err().contains("nests deeper"));
        // TUPLE1 applied over and over.
        let mut p = vec![b')'];
        p.extend(std::iter::repeat_n(0x85, n));
        p.push(b'.');
        assert!(run(&p).unwrap_err().contains("nests deeper"));
    }

    #[test]
    fn memo_self_references_cannot_grow_without_bound() {
        // x = (); then 40 times: memo x, x = (memo, memo).
        let mut p = vec![b')'];
        for _ in 0..40 {
            p.extend_from_slice(&[b'q', 0, b'h', 0, 0x86]);
        }
        p.push(b'.');
        let e = run(&p).unwrap_err();
        assert!(e.contains("memo") || e.contains("nests deeper"), "{e}");
    }

    #[test]
    fn a_small_state_dict_reads() {
        // {'a': 1}
        let v = run(b"}q\x00(X\x01\x00\x00\x00aK\x01u.").unwrap();
        assert!(matches!(v, Value::Dict(d) if d.len() == 1));
    }
}

//! The search-space language of `lmcompare tune --space`:
//! `lr=log(1e-5,1e-2);batch_size=[16,32,64];epochs=[3,5];optimizer=[adam,adamw];scheduler=[step(5,0.1),cosine,warmup_linear(0.1)]`.
//! Parts are separated by `;`; a part is `name=values` where values is a list `[a,b,...]`,
//! a range `log(lo,hi)` / `uniform(lo,hi)` / `int(lo,hi)`, or a single value. Every value
//! is checked when the space is parsed, and errors point at the offending part.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::schedule::{PlateauOptions, Schedule};

/// One hyperparameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s}"),
        }
    }
}

/// A sampled configuration: hyperparameter name → value (only the searched ones; the rest
/// take their defaults).
pub type Config = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    LogUniform(f64, f64),
    Uniform(f64, f64),
    IntRange(i64, i64),
    Choice(Vec<Value>),
}

impl Domain {
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Value {
        match self {
            Domain::LogUniform(lo, hi) => Value::Float(rng.gen_range(lo.ln()..=hi.ln()).exp()),
            Domain::Uniform(lo, hi) => Value::Float(rng.gen_range(*lo..=*hi)),
            Domain::IntRange(lo, hi) => Value::Int(rng.gen_range(*lo..=*hi)),
            Domain::Choice(v) => v[rng.gen_range(0..v.len())].clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Domain::LogUniform(a, b) => format!("log({a},{b})"),
            Domain::Uniform(a, b) => format!("uniform({a},{b})"),
            Domain::IntRange(a, b) => format!("int({a},{b})"),
            Domain::Choice(v) => format!(
                "[{}]",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub domain: Domain,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Space {
    pub params: Vec<Param>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{context}: {message}")]
pub struct SpaceError {
    /// Where: the offending part of the space, quoted.
    pub context: String,
    pub message: String,
}

fn err(part: &str, message: impl Into<String>) -> SpaceError {
    SpaceError {
        context: format!("in `{}`", part.trim()),
        message: message.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Bool,
    Optimizer,
    Scheduler,
    ClassWeight,
}

/// Every tunable hyperparameter: name, kind, and what it means.
pub const HYPERPARAMETERS: &[(&str, &str)] = &[
    ("lr", "learning rate, > 0"),
    ("batch_size", "examples per optimiser step"),
    ("epochs", "passes over the train split"),
    ("optimizer", "sgd | adam | adamw"),
    (
        "scheduler",
        "constant | step(step_size,gamma) | multistep(m1|m2|...,gamma) | exponential(gamma) | cosine[(eta_min)] | warmup_linear(fraction) | warmup_cosine(fraction) | plateau(factor,patience)",
    ),
    ("weight_decay", "L2 (adam, sgd) or decoupled (adamw) decay, >= 0"),
    ("momentum", "SGD momentum in [0, 1)"),
    ("dampening", "SGD dampening in [0, 1]"),
    ("nesterov", "SGD Nesterov momentum: true | false"),
    ("beta1", "Adam beta1 in [0, 1)"),
    ("beta2", "Adam beta2 in [0, 1)"),
    ("eps", "Adam epsilon, > 0"),
    ("amsgrad", "AMSGrad variant: true | false"),
    ("dropout", "dropout probability in the head, in [0, 1)"),
    ("grad_clip", "maximum gradient L2 norm; 0 = no clipping"),
    ("class_weight", "none | balanced"),
];

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "lr" | "weight_decay" | "momentum" | "dampening" | "beta1" | "beta2" | "eps"
        | "dropout" | "grad_clip" => Kind::Float,
        "batch_size" | "epochs" => Kind::Int,
        "nesterov" | "amsgrad" => Kind::Bool,
        "optimizer" => Kind::Optimizer,
        "scheduler" => Kind::Scheduler,
        "class_weight" => Kind::ClassWeight,
        _ => return None,
    })
}

/// Splits at `sep` outside parentheses and brackets.
fn split_top(s: &str, sep: char) -> Result<Vec<&str>, String> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced `{c}`"));
                }
            }
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced brackets".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_f64(part: &str, name: &str, s: &str) -> Result<f64, SpaceError> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| err(part, format!("`{}` is not a number (for {name})", s.trim())))
}

fn check_float(part: &str, name: &str, x: f64) -> Result<(), SpaceError> {
    let bad = |why: &str| Err(err(part, format!("{name} = {x}: {why}")));
    match name {
        "lr" if x <= 0.0 => bad("a learning rate must be > 0"),
        "eps" if x <= 0.0 => bad("must be > 0"),
        "weight_decay" | "grad_clip" if x < 0.0 => bad("must be >= 0"),
        "momentum" | "beta1" | "beta2" | "dropout" if !(0.0..1.0).contains(&x) => {
            bad("must be in [0, 1)")
        }
        "dampening" if !(0.0..=1.0).contains(&x) => bad("must be in [0, 1]"),
        _ => Ok(()),
    }
}

fn check_int(part: &str, name: &str, x: i64) -> Result<(), SpaceError> {
    if x < 1 {
        return Err(err(part, format!("{name} = {x}: must be at least 1")));
    }
    Ok(())
}

fn scalar(part: &str, name: &str, kind: Kind, s: &str) -> Result<Value, SpaceError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(err(part, format!("empty value for {name}")));
    }
    match kind {
        Kind::Float => {
            let x = parse_f64(part, name, t)?;
            check_float(part, name, x)?;
            Ok(Value::Float(x))
        }
        Kind::Int => {
            let x: i64 = t
                .parse()
                .map_err(|_| err(part, format!("`{t}` is not an integer (for {name})")))?;
            check_int(part, name, x)?;
            Ok(Value::Int(x))
        }
        Kind::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Text("true".into())),
            "false" | "0" | "no" => Ok(Value::Text("false".into())),
            _ => Err(err(part, format!("`{t}` is not true/false (for {name})"))),
        },
        Kind::Optimizer => match t.to_ascii_lowercase().as_str() {
            o @ ("sgd" | "adam" | "adamw") => Ok(Value::Text(o.into())),
            _ => Err(err(
                part,
                format!("unknown optimizer `{t}`; choose sgd, adam or adamw"),
            )),
        },
        Kind::Scheduler => {
            let sched = parse_schedule(t).map_err(|m| err(part, m))?;
            Ok(Value::Text(sched.describe()))
        }
        Kind::ClassWeight => match t.to_ascii_lowercase().as_str() {
            w @ ("none" | "balanced") => Ok(Value::Text(w.into())),
            _ => Err(err(
                part,
                format!("class_weight `{t}`: use none or balanced"),
            )),
        },
    }
}

/// Parses a schedule such as `step(5,0.1)`, `cosine` or `warmup_linear(0.1)`.
pub fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let t = s.trim();
    let (name, args) = match t.find('(') {
        Some(i) => {
            let inner = t[i + 1..]
                .strip_suffix(')')
                .ok_or_else(|| format!("scheduler `{t}`: missing `)`"))?;
            let args: Vec<&str> = inner
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect();
            (t[..i].trim(), args)
        }
        None => (t, Vec::new()),
    };
    let num = |i: usize, default: Option<f64>| -> Result<f64, String> {
        match args.get(i) {
            Some(a) => a
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("scheduler `{t}`: `{a}` is not a number")),
            None => default.ok_or_else(|| format!("scheduler `{t}`: needs argument {}", i + 1)),
        }
    };
    let count = |i: usize, default: Option<usize>| -> Result<usize, String> {
        match args.get(i) {
            Some(a) => a
                .parse::<usize>()
                .ok()
                .filter(|&x| x >= 1)
                .ok_or_else(|| format!("scheduler `{t}`: `{a}` is not a positive integer")),
            None => default.ok_or_else(|| format!("scheduler `{t}`: needs argument {}", i + 1)),
        }
    };
    let max_args = |n: usize| -> Result<(), String> {
        if args.len() > n {
            Err(format!("scheduler `{t}`: takes at most {n} arguments"))
        } else {
            Ok(())
        }
    };
    let gamma_ok = |g: f64| -> Result<f64, String> {
        if g > 0.0 && g <= 1.0 {
            Ok(g)
        } else {
            Err(format!("scheduler `{t}`: gamma {g} must be in (0, 1]"))
        }
    };
    let fraction_ok = |f: f64| -> Result<f64, String> {
        if (0.0..1.0).contains(&f) {
            Ok(f)
        } else {
            Err(format!(
                "scheduler `{t}`: the warm-up fraction {f} must be in [0, 1)"
            ))
        }
    };
    let sched = match name.to_ascii_lowercase().as_str() {
        "constant" | "none" => {
            max_args(0)?;
            Schedule::Constant
        }
        "step" => {
            max_args(2)?;
            Schedule::Step {
                step_size: count(0, None)?,
                gamma: gamma_ok(num(1, Some(0.1))?)?,
            }
        }
        "multistep" => {
            max_args(2)?;
            let ms = args
                .first()
                .ok_or_else(|| format!("scheduler `{t}`: needs milestones, e.g. multistep(2|4,0.1)"))?;
            let mut milestones = ms
                .split('|')
                .map(|m| {
                    m.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("scheduler `{t}`: milestone `{m}` is not an integer"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            milestones.sort_unstable();
            Schedule::MultiStep {
                milestones,
                gamma: gamma_ok(num(1, Some(0.1))?)?,
            }
        }
        "exponential" | "exp" => {
            max_args(1)?;
            Schedule::Exponential {
                gamma: gamma_ok(num(0, None)?)?,
            }
        }
        "cosine" => {
            max_args(2)?;
            let eta_min = num(0, Some(0.0))?;
            if eta_min < 0.0 {
                return Err(format!("scheduler `{t}`: eta_min must be >= 0"));
            }
            let t_max = if args.len() > 1 {
                Some(count(1, None)?)
            } else {
                None
            };
            Schedule::Cosine { t_max, eta_min }
        }
        "warmup_linear" => {
            max_args(1)?;
            Schedule::WarmupLinear {
                warmup: fraction_ok(num(0, Some(0.1))?)?,
            }
        }
        "warmup_cosine" => {
            max_args(1)?;
            Schedule::WarmupCosine {
                warmup: fraction_ok(num(0, Some(0.1))?)?,
            }
        }
        "plateau" => {
            max_args(2)?;
            let factor = num(0, Some(0.1))?;
            if !(factor > 0.0 && factor < 1.0) {
                return Err(format!("scheduler `{t}`: factor must be in (0, 1)"));
            }
            let patience = match args.get(1) {
                Some(a) => a
                    .parse::<usize>()
                    .map_err(|_| format!("scheduler `{t}`: patience `{a}` is not an integer"))?,
                None => 1,
            };
            Schedule::Plateau(PlateauOptions {
                factor,
                patience,
                ..PlateauOptions::default()
            })
        }
        other => {
            return Err(format!(
                "unknown scheduler `{other}`; choose constant, step(s,g), multistep(m1|m2,g), exponential(g), cosine, warmup_linear(f), warmup_cosine(f) or plateau(factor,patience)"
            ))
        }
    };
    Ok(sched)
}

impl Space {
    pub fn parse(text: &str) -> Result<Space, SpaceError> {
        let parts = split_top(text, ';').map_err(|m| err(text, m))?;
        let mut params: Vec<Param> = Vec::new();
        for part in parts {
            if part.trim().is_empty() {
                continue;
            }
            let (name, rhs) = part
                .split_once('=')
                .ok_or_else(|| err(part, "expected name=values, e.g. lr=log(1e-5,1e-2)"))?;
            let name = name.trim();
            let kind = kind_of(name).ok_or_else(|| {
                err(
                    part,
                    format!(
                        "unknown hyperparameter `{name}`; known: {}",
                        HYPERPARAMETERS
                            .iter()
                            .map(|h| h.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if params.iter().any(|p| p.name == name) {
                return Err(err(part, format!("`{name}` is given twice")));
            }
            let rhs = rhs.trim();
            let domain = if let Some(inner) = rhs.strip_prefix('[') {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| err(part, "a list must end with `]`"))?;
                let items = split_top(inner, ',').map_err(|m| err(part, m))?;
                let mut values = Vec::new();
                for item in items {
                    let v = scalar(part, name, kind, item)?;
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                Domain::Choice(values)
            } else if let Some((func, args)) = range_call(rhs) {
                let args = split_top(args, ',').map_err(|m| err(part, m))?;
                if args.len() != 2 {
                    return Err(err(part, format!("{func}(lo,hi) takes two numbers")));
                }
                match (func, kind) {
                    ("log" | "uniform", Kind::Float) => {
                        let lo = parse_f64(part, name, args[0])?;
                        let hi = parse_f64(part, name, args[1])?;
                        check_float(part, name, lo)?;
                        check_float(part, name, hi)?;
                        if lo >= hi {
                            return Err(err(part, format!("the range needs lo < hi, got {lo} and {hi}")));
                        }
                        if func == "log" {
                            if lo <= 0.0 {
                                return Err(err(part, "a log range needs lo > 0"));
                            }
                            Domain::LogUniform(lo, hi)
                        } else {
                            Domain::Uniform(lo, hi)
                        }
                    }
                    ("int", Kind::Int) => {
                        let p = |s: &str| {
                            s.trim().parse::<i64>().map_err(|_| {
                                err(part, format!("`{}` is not an integer", s.trim()))
                            })
                        };
                        let (lo, hi) = (p(args[0])?, p(args[1])?);
                        check_int(part, name, lo)?;
                        if lo > hi {
                            return Err(err(part, format!("int({lo},{hi}): needs lo <= hi")));
                        }
                        Domain::IntRange(lo, hi)
                    }
                    ("int", _) => return Err(err(part, format!("{name} is not an integer hyperparameter; use log(lo,hi) or uniform(lo,hi)"))),
                    (_, Kind::Int) => return Err(err(part, format!("{name} is an integer; use int(lo,hi) or a list"))),
                    _ => return Err(err(part, format!("{name} takes a list of values, not a range"))),
                }
            } else {
                Domain::Choice(vec![scalar(part, name, kind, rhs)?])
            };
            params.push(Param {
                name: name.to_owned(),
                domain,
            });
        }
        Ok(Space { params })
    }

    /// Canonical text of the space (stable across spacing and order of list duplicates).
    pub fn describe(&self) -> String {
        self.params
            .iter()
            .map(|p| format!("{}={}", p.name, p.domain.describe()))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Every combination, in order (the last parameter varies fastest). Errors if a
    /// parameter is a continuous range.
    pub fn grid(&self) -> Result<Vec<Config>, SpaceError> {
        let mut out = vec![Config::new()];
        for p in &self.params {
            let values = match &p.domain {
                Domain::Choice(v) => v.clone(),
                Domain::IntRange(lo, hi) if hi - lo < 1000 => (*lo..=*hi).map(Value::Int).collect(),
                d => {
                    return Err(SpaceError {
                        context: format!("in `{}={}`", p.name, d.describe()),
                        message: "grid search needs a list of values; write a list like lr=[1e-4,1e-3] or use --search random, tpe or halving".into(),
                    })
                }
            };
            let mut next = Vec::with_capacity(out.len() * values.len());
            for c in &out {
                for v in &values {
                    let mut c2 = c.clone();
                    c2.insert(p.name.clone(), v.clone());
                    next.push(c2);
                }
            }
            out = next;
        }
        Ok(out)
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> Config {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.domain.sample(rng)))
            .collect()
    }
}

fn range_call(rhs: &str) -> Option<(&str, &str)> {
    for f in ["log", "uniform", "int"] {
        if let Some(rest) = rhs.strip_prefix(f) {
            let rest = rest.trim_start();
            if let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
                return Some((f, inner));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_the_documented_example() {
        let s = Space::parse("lr=log(1e-5,1e-2);batch_size=[16,32,64];epochs=[3,5];optimizer=[adam,adamw];scheduler=[step(5,0.1),cosine,warmup_linear(0.1)]").unwrap();
        assert_eq!(s.params.len(), 5);
        assert_eq!(s.params[0].domain, Domain::LogUniform(1e-5, 1e-2));
        assert_eq!(
            s.params[1].domain,
            Domain::Choice(vec![Value::Int(16), Value::Int(32), Value::Int(64)])
        );
        assert_eq!(
            s.params[4].domain,
            Domain::Choice(vec![
                Value::Text("step(5,0.1)".into()),
                Value::Text("cosine".into()),
                Value::Text("warmup_linear(0.1)".into())
            ])
        );
        assert!(s.grid().is_err(), "a log range cannot be enumerated");
        let s2 = Space::parse(&s.describe()).unwrap();
        assert_eq!(s, s2, "describe() round-trips");
    }

    #[test]
    fn grid_enumerates_every_combination_last_fastest() {
        let s = Space::parse("lr=[0.1,0.01];optimizer=[sgd,adam,adamw]; epochs = 2").unwrap();
        let g = s.grid().unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0]["optimizer"], Value::Text("sgd".into()));
        assert_eq!(g[1]["optimizer"], Value::Text("adam".into()));
        assert_eq!(g[3]["lr"], Value::Float(0.01));
        assert!(g.iter().all(|c| c["epochs"] == Value::Int(2)));
    }

    #[test]
    fn errors_point_at_the_offending_part() {
        let cases = [
            ("lr=log(0,1e-2)", "lr=log(0,1e-2)", "must be > 0"),
            ("lr=[0.1,-1]", "lr=[0.1,-1]", "a learning rate must be > 0"),
            (
                "lr=0.1;batch_size=[16,x]",
                "batch_size=[16,x]",
                "`x` is not an integer",
            ),
            (
                "lr=0.1;optimiser=adam",
                "optimiser=adam",
                "unknown hyperparameter `optimiser`",
            ),
            (
                "optimizer=[adam,rmsprop]",
                "optimizer=[adam,rmsprop]",
                "unknown optimizer `rmsprop`",
            ),
            (
                "scheduler=step(0,0.1)",
                "scheduler=step(0,0.1)",
                "not a positive integer",
            ),
            (
                "scheduler=[cosine,warmup_linear(1.5)]",
                "warmup_linear(1.5)",
                "warm-up fraction",
            ),
            ("lr=log(1e-2,1e-5)", "lr=log(1e-2,1e-5)", "lo < hi"),
            ("lr=[0.1;epochs=3", "lr=[0.1;epochs=3", "unbalanced"),
            ("epochs=log(1,10)", "epochs=log(1,10)", "integer"),
            ("lr", "lr", "expected name=values"),
            ("dropout=[0.1,1.0]", "dropout=[0.1,1.0]", "[0, 1)"),
            ("lr=0.1;lr=0.2", "lr=0.2", "given twice"),
        ];
        for (text, part, message) in cases {
            let e = Space::parse(text).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(part), "{text}: {shown}");
            assert!(shown.contains(message), "{text}: {shown}");
        }
    }

    #[test]
    fn samples_stay_in_their_domains_and_log_ranges_are_log_uniform() {
        let s = Space::parse("lr=log(1e-5,1e-1);epochs=int(2,4);dropout=uniform(0,0.5)").unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        let mut below_1e3 = 0;
        for _ in 0..4000 {
            let c = s.sample(&mut rng);
            let lr = c["lr"].as_f64().unwrap();
            assert!((1e-5..=1e-1).contains(&lr));
            below_1e3 += usize::from(lr < 1e-3);
            let e = c["epochs"].as_f64().unwrap();
            assert!((2.0..=4.0).contains(&e));
            let d = c["dropout"].as_f64().unwrap();
            assert!((0.0..=0.5).contains(&d));
        }
        // log-uniform: half the draws fall below the geometric midpoint 1e-3.
        assert!((1800..2200).contains(&below_1e3), "{below_1e3}");
    }

    #[test]
    fn schedules_parse_to_their_torch_meaning() {
        assert_eq!(
            parse_schedule("step(5,0.1)").unwrap(),
            Schedule::Step {
                step_size: 5,
                gamma: 0.1
            }
        );
        assert_eq!(
            parse_schedule("multistep(6|2,0.5)").unwrap(),
            Schedule::MultiStep {
                milestones: vec![2, 6],
                gamma: 0.5
            }
        );
        assert_eq!(
            parse_schedule("cosine").unwrap(),
            Schedule::Cosine {
                t_max: None,
                eta_min: 0.0
            }
        );
        assert!(parse_schedule("plateau(0.5,2)").is_ok());
        assert!(parse_schedule("linear")
            .unwrap_err()
            .contains("unknown scheduler"));
        assert!(parse_schedule("exponential(1.5)")
            .unwrap_err()
            .contains("gamma"));
    }
}

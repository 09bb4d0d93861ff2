//! Value parsers for numeric options: each names what the option needs, so `--limit 0`,
//! `--batch-size 0` or `--bootstrap -1` get one message naming the option (clap adds it)
//! and exit 2, instead of an empty run, a silent no-op or "unexpected argument '-1'".

/// Resamples beyond this give no visible change in a 95% interval (the Monte Carlo error of
/// a percentile falls as 1/√B: at 10⁵ it is already far below the fourth decimal shown)
/// and cost minutes.
pub const MAX_RESAMPLES: usize = 100_000;

fn integer(s: &str) -> Result<i128, String> {
    s.trim()
        .parse::<i128>()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

/// 0 or more.
pub fn count(s: &str) -> Result<usize, String> {
    match integer(s)? {
        n if n < 0 => Err(format!("{n} is negative; it must be 0 or more")),
        n => usize::try_from(n).map_err(|_| format!("{n} is too large")),
    }
}

/// 1 or more: a batch size, a limit, a number of tokens to generate.
pub fn positive(s: &str) -> Result<usize, String> {
    match integer(s)? {
        n if n < 0 => Err(format!("{n} is negative; it must be at least 1")),
        0 => Err("0 would do nothing; it must be at least 1".into()),
        n => usize::try_from(n).map_err(|_| format!("{n} is too large")),
    }
}

/// A maximum input length in tokens: room for the special tokens and one of text.
pub fn max_length(s: &str) -> Result<usize, String> {
    match integer(s)? {
        n if n < 2 => Err(format!(
            "{n} leaves no room for text once the special tokens ([CLS]/[SEP], <s>/</s>, BOS) are in; it must be at least 2"
        )),
        n => usize::try_from(n).map_err(|_| format!("{n} is too large")),
    }
}

/// Bootstrap resamples or permutations: 0 turns them off.
pub fn resamples(s: &str) -> Result<usize, String> {
    match count(s)? {
        n if n > MAX_RESAMPLES => Err(format!(
            "{n} is more than {MAX_RESAMPLES}, which already pins a 95% interval far below the fourth decimal shown; use at most {MAX_RESAMPLES} (0 turns them off)"
        )),
        n => Ok(n),
    }
}

/// A seed: any non-negative 64-bit integer.
pub fn seed(s: &str) -> Result<u64, String> {
    match integer(s)? {
        n if n < 0 => Err(format!("{n} is negative; a seed is 0 or more")),
        n => u64::try_from(n).map_err(|_| format!("{n} is larger than 2^64 - 1")),
    }
}

fn real(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// Strictly between 0 and 1: a test fraction, a confidence level.
pub fn fraction(s: &str) -> Result<f64, String> {
    match real(s)? {
        x if x > 0.0 && x < 1.0 => Ok(x),
        x => Err(format!("{x} must be strictly between 0 and 1")),
    }
}

/// More than 0: seconds, requests per second.
pub fn positive_real(s: &str) -> Result<f64, String> {
    match real(s)? {
        x if x > 0.0 => Ok(x),
        x => Err(format!("{x} must be more than 0")),
    }
}

/// 0 or more: a minimum improvement.
pub fn non_negative_real(s: &str) -> Result<f64, String> {
    match real(s)? {
        x if x >= 0.0 => Ok(x),
        x => Err(format!("{x} is negative; it must be 0 or more")),
    }
}

/// Every subcommand takes negative numbers as values, so `--limit -3` reaches the option's
/// parser (and its message) instead of being read as an unknown flag `-3`.
pub fn allow_negative_values(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    names
        .iter()
        .fold(cmd.allow_negative_numbers(true), |cmd, name| {
            cmd.mut_subcommand(name, allow_negative_values)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parser_names_the_problem() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert!(positive("-3").unwrap_err().contains("negative"));
        assert!(count("1.5").unwrap_err().contains("whole number"));
        assert_eq!(count("0"), Ok(0));
        assert!(max_length("1").unwrap_err().contains("at least 2"));
        assert_eq!(resamples("0"), Ok(0));
        assert!(resamples("100000000").unwrap_err().contains("at most"));
        assert!(seed("-1").unwrap_err().contains("negative"));
        assert!(fraction("1").is_err() && fraction("0").is_err() && fraction("nan").is_err());
        assert_eq!(fraction("0.2"), Ok(0.2));
        assert!(positive_real("0").is_err() && positive_real("inf").is_err());
        assert!(non_negative_real("-0.1").is_err());
    }
}

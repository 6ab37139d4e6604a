//! Which CPUs exist: parses the kernel's CPU list format ("0-3,8,10-11").

use std::fs;

use anyhow::{bail, Context, Result};

/// Parses a CPU list such as `0-3,8`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let first: u32 = first
                    .parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?;
                let last: u32 = last
                    .parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?;
                if last < first {
                    bail!("bad CPU range {part:?}");
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(
                part.parse()
                    .with_context(|| format!("bad CPU list {text:?}"))?,
            ),
        }
    }
    Ok(cpus)
}

/// The CPUs currently online.
pub fn online_cpus() -> Result<Vec<u32>> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online")
        .context("reading /sys/devices/system/cpu/online")?;
    parse_cpu_list(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singletons() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }
}

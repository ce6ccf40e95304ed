//! The one duration parser, for flags, TOML, env, script arguments and whoami's query values.
//!
//! `Syntax::Standard` is humantime's (`30s`, `500ms`, `2m`, `1h 30m`, `2min`, `1day`): what
//! switchyard's own flags, config file and scripts take. `Syntax::Go` is Go's
//! `time.ParseDuration` plus a bare number of milliseconds: only what the Traefik whoami
//! compatibility needs (`?wait=1.5s`, `?wait=250`). Standard durations above 30 days are refused
//! (a `5y` timeout is a typo). A leaf: imports nothing from the crate.

use std::time::Duration;

/// Which spelling a duration is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Standard,
    Go,
}

/// Parses `s` in `syntax` (`Standard` ignores surrounding spaces, `Go` takes none, as Go does);
/// the error says what was wrong.
pub fn parse(s: &str, syntax: Syntax) -> Result<Duration, String> {
    match syntax {
        Syntax::Standard => {
            let d = humantime::parse_duration(s.trim())
                .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 30s, 500ms, 2m)"))?;
            if d > MAX_STANDARD {
                return Err(format!(
                    "duration {s:?} is too long (at most 30 days): a timeout or interval that long is a typo"
                ));
            }
            Ok(d)
        }
        Syntax::Go => parse_go(s),
    }
}

/// The longest duration switchyard's own settings take (`5y` is refused, not slept on).
pub const MAX_STANDARD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a Go-style duration (`300ms`, `1.5s`, `2m`, `1h2m3s`, units `ns`,
/// `us`/`µs`, `ms`, `s`, `m`, `h`; a leading `+` is allowed) or a plain
/// non-negative integer of milliseconds. Negative durations are rejected;
/// overlarge ones saturate.
fn parse_go(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Duration::from_millis(saturating_digits(s) as u64));
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("missing number".into());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number".into());
        }
        let unit_len = after_num
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_num.len());
        let (unit, next) = after_num.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => {
                return Err(
                    "missing unit (use ms, s, m or h, or a plain number of milliseconds)".into(),
                )
            }
            other => return Err(format!("unknown unit {other:?}")),
        };
        let mut part = saturating_digits(int_part).saturating_mul(unit_nanos);
        let mut scale = unit_nanos;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part = part.saturating_add(u128::from(digit - b'0') * scale);
        }
        nanos = nanos.saturating_add(part);
        rest = next;
    }
    let secs = nanos / 1_000_000_000;
    let subsec = (nanos % 1_000_000_000) as u32; // < 1e9, fits
    Ok(match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, subsec),
        Err(_) => Duration::MAX,
    })
}

/// The value of an all-ASCII-digit string, saturating at `u64::MAX`.
fn saturating_digits(digits: &str) -> u128 {
    digits
        .bytes()
        .fold(0u128, |acc, d| {
            acc.saturating_mul(10).saturating_add(u128::from(d - b'0'))
        })
        .min(u128::from(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_is_humantime_and_go_is_whoamis() {
        let ok = |s, syntax| parse(s, syntax).unwrap();
        assert_eq!(ok(" 1m30s ", Syntax::Standard), Duration::from_secs(90));
        assert_eq!(ok("2min", Syntax::Standard), Duration::from_secs(120));
        assert_eq!(ok("1h 30m", Syntax::Standard), Duration::from_secs(5400));
        assert_eq!(ok("30days", Syntax::Standard), MAX_STANDARD);
        assert!(parse("5y", Syntax::Standard)
            .unwrap_err()
            .contains("too long"));
        // A bare number has no unit in switchyard's own settings...
        assert!(parse("10", Syntax::Standard)
            .unwrap_err()
            .contains("write e.g. 30s"));
        // ...and is milliseconds for whoami, which also takes Go's fractions.
        assert_eq!(ok("10", Syntax::Go), Duration::from_millis(10));
        assert_eq!(ok("1.5s", Syntax::Go), Duration::from_millis(1500));
        assert!(parse("2min", Syntax::Go).is_err());
        assert!(parse("-1s", Syntax::Go).is_err());
    }
}

//! Kubernetes downward-API labels files.
//!
//! The kubelet writes a pod's labels into a file, one per line, as `key="value"`, the value
//! quoted the way Go's `%q` does it (the same file pgnodemx's `kdapi_setof_kv('labels')` reads).
//! This module parses that file; it knows nothing of PostgreSQL.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelsError {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for LabelsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses the whole file into (key, value) pairs, in file order. Blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, LabelsError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &str| LabelsError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let eq = line
            .find('=')
            .ok_or_else(|| err("expected key=\"value\""))?;
        let key = line[..eq].trim();
        if key.is_empty() {
            return Err(err("empty label key"));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(err("label key has characters Kubernetes does not allow"));
        }
        let value = unquote(line[eq + 1..].trim()).map_err(|r| err(&r))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Undoes Go's strconv.Quote: the value must be a double-quoted string.
fn unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| s.len() >= 2)
        .ok_or_else(|| "value is not a double-quoted string".to_string())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Err("unescaped double quote inside value".into()),
            '\\' => {
                let e = chars.next().ok_or("value ends in a lone backslash")?;
                match e {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    'x' => out.push(hex_char(&mut chars, 2)?),
                    'u' => out.push(hex_char(&mut chars, 4)?),
                    'U' => out.push(hex_char(&mut chars, 8)?),
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap();
                        for _ in 0..2 {
                            let d = chars
                                .next()
                                .and_then(|c| c.to_digit(8))
                                .ok_or("bad octal escape")?;
                            v = v * 8 + d;
                        }
                        out.push(char::from_u32(v).ok_or("bad octal escape")?);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn hex_char(chars: &mut std::str::Chars<'_>, n: usize) -> Result<char, String> {
    let mut v: u32 = 0;
    for _ in 0..n {
        let d = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or("bad hexadecimal escape")?;
        v = v * 16 + d;
    }
    char::from_u32(v).ok_or_else(|| "escape is not a valid character".to_string())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_kubelet_output() {
        let text = "app=\"hippo\"\npg-cluster=\"east\"\n\npostgres-operator.crunchydata.com/cluster=\"hippo-east\"\n";
        let got = parse(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], ("pg-cluster".to_string(), "east".to_string()));
        assert_eq!(got[2].1, "hippo-east");
    }

    #[test]
    fn unescapes_go_quoting() {
        let got = parse(r#"k="a\"b\\c\n\x41\u00e9\101""#).unwrap();
        assert_eq!(got[0].1, "a\"b\\c\nAéA");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(parse("no-equals-sign").unwrap_err().line, 1);
        assert!(parse("a=\"x\"\nb=unquoted")
            .unwrap_err()
            .reason
            .contains("double-quoted"));
        assert!(parse("=\"x\"").unwrap_err().reason.contains("empty"));
        assert!(parse("k=\"a\\q\"")
            .unwrap_err()
            .reason
            .contains("unknown escape"));
        assert!(parse("k=\"a\"b\"")
            .unwrap_err()
            .reason
            .contains("unescaped"));
        assert!(parse("k=\"").is_err());
        assert!(parse("bad key=\"x\"").is_err());
    }
}

//! TOML configuration files whose errors name the file, the line and the field.
//!
//! Every binary of the project reads its configuration the same way: serde
//! reads the text into raw structs (`deny_unknown_fields`), then the binary
//! checks what serde cannot (references, duplicates, ranges) using the spans
//! of `toml::Spanned` fields. Both kinds of error come out of here as one
//! [`ConfigError`] such as
//!
//! ```text
//! agent.toml:12:11: field `address` in [[group.member]]: invalid IP address syntax
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use toml::Spanned;

/// A configuration that cannot be used, with where it went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{}:{line}:{column}: {field}{message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        /// `field `x` in [table]: `, or empty when no field applies.
        field: String,
        message: String,
    },
}

/// A configuration file's text and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// Reads a file.
    pub fn read(path: &Path) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Source::new(text, path))
    }

    /// Text from elsewhere (tests, reloads); `path` is only used in errors.
    pub fn new(text: impl Into<String>, path: &Path) -> Source {
        Source {
            path: path.to_owned(),
            text: text.into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deserialises the text; errors carry the position serde reports.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.error_at(e.span(), e.message()))
    }

    /// An error about the text at `span` (for checks made after parsing).
    pub fn error_at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let at = Location::of(&self.text, span);
        ConfigError::Invalid {
            path: self.path.clone(),
            line: at.line,
            column: at.column,
            field: at.field,
            message: message.into(),
        }
    }
}

/// A position in the text, with the field and table it falls in.
struct Location {
    line: usize,
    column: usize,
    field: String,
}

impl Location {
    fn of(text: &str, span: Option<Range<usize>>) -> Location {
        let Some(span) = span else {
            return Location {
                line: 1,
                column: 1,
                field: String::new(),
            };
        };
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let this_line = text[line_start..].lines().next().unwrap_or("");
        let key = this_line
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.starts_with('['));
        // The table the span is in: the last header at or above its line.
        let through_line = &text[..(line_start + this_line.len()).min(text.len())];
        let table = through_line
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.split('#').next().unwrap_or(l).trim());
        let field = match (key, table) {
            (Some(k), Some(t)) => format!("field `{k}` in {t}: "),
            (Some(k), None) => format!("field `{k}`: "),
            (None, Some(t)) => format!("in {t}: "),
            (None, None) => String::new(),
        };
        Location {
            line,
            column,
            field,
        }
    }
}

/// A duration written as `"500ms"`, `"10s"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(HumanDuration).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration (write e.g. \"500ms\", \"10s\" or \"2m\")"
            ))
        })
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

/// Parses `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`; `None` for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// A signing key as config files name it: an id, and the secret from a file
/// or an environment variable, never from the file itself or the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySource {
    /// The key's id.
    pub id: String,
    /// A file holding the secret.
    pub file: Option<std::path::PathBuf>,
    /// An environment variable holding the secret.
    pub env: Option<String>,
}

/// Looks an environment variable up (tests pass their own lookup instead of
/// changing the process environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

/// Reads a secret from `file` or from the environment variable `env_name`
/// (exactly one of them).
pub fn read_secret(
    file: Option<&Path>,
    env_name: Option<&str>,
    env: EnvLookup<'_>,
) -> Result<Vec<u8>, String> {
    match (file, env_name) {
        (Some(_), Some(_)) => Err("give the secret as `file` or `env`, not both".into()),
        (Some(file), None) => {
            std::fs::read(file).map_err(|e| format!("cannot read key file {}: {e}", file.display()))
        }
        (None, Some(name)) => env(name)
            .map(std::ffi::OsString::into_encoded_bytes)
            .ok_or_else(|| format!("environment variable {name} is not set")),
        (None, None) => Err("give the secret as `file` or `env`".into()),
    }
}

/// A `Spanned` default for fields the file may leave out: errors about a
/// default point at the start of the file.
pub fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// Checks that a spanned number is above zero.
pub fn positive<T>(source: &Source, v: Spanned<T>) -> Result<T, ConfigError>
where
    T: Default + PartialEq,
{
    if *v.get_ref() == T::default() {
        return Err(source.error_at(Some(v.span()), "must be greater than zero"));
    }
    Ok(v.into_inner())
}

/// Checks that a spanned duration is longer than zero.
pub fn positive_duration(
    source: &Source,
    v: Spanned<HumanDuration>,
) -> Result<Duration, ConfigError> {
    if v.get_ref().0.is_zero() {
        return Err(source.error_at(Some(v.span()), "must be longer than zero"));
    }
    Ok(v.into_inner().0)
}

/// An example file's fields, each with the file's text without it: the
/// means to check that a reference file which shows every field with its
/// default shows the real default (left out, the field must parse to the
/// same configuration). Each field is named by its path, such as
/// `push.min_interval` or `group[0].member[1].cost`; tables and arrays of
/// tables are descended into, other values are fields.
pub fn each_field_left_out(text: &str) -> Result<Vec<(String, String)>, toml::de::Error> {
    /// The paths of every field under `table`, and the table without each.
    fn fields(table: &toml::Table, prefix: &str) -> Vec<(String, toml::Table)> {
        let mut out = Vec::new();
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            let mut replace = |field: String, inner: toml::Value| {
                let mut outer = table.clone();
                outer.insert(key.clone(), inner);
                out.push((field, outer));
            };
            match value {
                toml::Value::Table(inner) => {
                    for (field, without) in fields(inner, &path) {
                        replace(field, toml::Value::Table(without));
                    }
                }
                toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                    for (i, item) in items.iter().enumerate() {
                        let Some(inner) = item.as_table() else {
                            continue;
                        };
                        for (field, without) in fields(inner, &format!("{path}[{i}]")) {
                            let mut items = items.clone();
                            items[i] = toml::Value::Table(without);
                            replace(field, toml::Value::Array(items));
                        }
                    }
                }
                _ => {
                    let mut without = table.clone();
                    without.remove(key);
                    out.push((path, without));
                }
            }
        }
        out
    }
    let table: toml::Table = toml::from_str(text)?;
    Ok(fields(&table, "")
        .into_iter()
        .map(|(field, without)| (field, without.to_string()))
        .collect())
}

/// What a reference file that shows every field with its default says
/// wrongly: each field it sets (but the `site` fields, the example site's
/// own values) is left out in turn, and must parse, by `parse`, to the same
/// configuration (compared by `Debug`) or not at all (a required field).
/// Returns how many fields were checked and those shown with another value
/// than their default.
pub fn fields_off_their_default<C: std::fmt::Debug, E>(
    text: &str,
    site: &[&str],
    parse: impl Fn(&str) -> Result<C, E>,
) -> (usize, Vec<String>) {
    let Ok(full) = parse(text) else {
        return (0, vec!["(the whole file does not parse)".to_owned()]);
    };
    let full = format!("{full:?}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    let fields = each_field_left_out(text).unwrap_or_default();
    for (field, without) in fields {
        if site.contains(&field.as_str()) {
            continue;
        }
        let Ok(parsed) = parse(&without) else {
            continue; // required
        };
        if format!("{parsed:?}") != full {
            wrong.push(field);
        }
        checked += 1;
    }
    (checked, wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Conf {
        wait: HumanDuration,
        table: Option<Table>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Table {
        port: u16,
    }

    fn err(text: &str) -> String {
        Source::new(text, Path::new("c.toml"))
            .parse::<Conf>()
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn errors_point_at_line_and_field() {
        let e = err("wait = \"1s\"\n[table]\nport = 70000\n");
        assert!(
            e.starts_with("c.toml:3:8: field `port` in [table]: "),
            "{e}"
        );
        let e = err("wait = \"soon\"\n");
        assert!(
            e.starts_with("c.toml:1:8: field `wait`: ") && e.contains("not a duration"),
            "{e}"
        );
        let e = err("wait = \"1s\"\nwat = 1\n");
        assert!(e.starts_with("c.toml:2:1:") && e.contains("wat"), "{e}");
    }

    #[test]
    fn a_span_on_a_header_names_that_table() {
        let source = Source::new("wait = \"1s\"\n[[table]]\nport = 1\n", Path::new("c.toml"));
        let e = source.error_at(Some(12..21), "bad table").to_string();
        assert_eq!(e, "c.toml:2:1: in [[table]]: bad table");
    }

    #[test]
    fn each_field_is_left_out_once() {
        let text = "a = 1\n[t]\nb = \"x\"\n[[u]]\nc = [1, 2]\n[[u]]\nc = [3]\nd = 4\n";
        let fields = each_field_left_out(text).unwrap();
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["a", "t.b", "u[0].c", "u[1].c", "u[1].d"]);
        let (_, without) = &fields[3];
        let table: toml::Table = toml::from_str(without).unwrap();
        assert_eq!(table["u"][0]["c"], toml::Value::from(vec![1, 2]));
        assert!(table["u"][1].get("c").is_none());
        assert_eq!(table["u"][1]["d"].as_integer(), Some(4));
        assert_eq!(table["a"].as_integer(), Some(1));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1e999s"), None);
    }
}

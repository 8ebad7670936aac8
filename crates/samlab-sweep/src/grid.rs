//! Grid files: the config of one run and the axes that vary it.
//!
//! ```toml
//! base = "runs/example/config.toml"   # a run's config.toml (path relative to the grid file), or a [base] table
//!
//! [axes]                              # the product of these
//! "train.sam.rho" = [0.0, 0.05, 0.1]
//! "train.seed" = [0, 1, 2]
//!
//! [[zip]]                             # keys that vary together (equal lengths): one more axis of the product
//! "train.lr" = [0.1, 0.05]
//! "train.iters" = [1000, 2000]
//! ```
//!
//! Keys are dotted paths into the config (missing tables are created; the engine's parser then refuses keys it
//! does not know). Points are ordered as nested loops over the axes, the last axis fastest; `[axes]` keys are
//! sorted, then the `[[zip]]` groups follow in file order.

use std::path::Path;

use toml::{Table, Value};

use crate::{invalid, SweepError};

/// Most runs one grid may make.
pub const MAX_RUNS: usize = 100_000;

/// A parsed grid file.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The config every run starts from.
    pub base: Table,
    /// The axes, in loop order.
    pub axes: Vec<Axis>,
}

/// One axis: one key (a product axis) or several varied together (a zipped one).
#[derive(Clone, Debug)]
pub struct Axis {
    /// Dotted keys.
    pub keys: Vec<String>,
    /// `values[i][k]` is key k's value at the axis's i-th point.
    pub values: Vec<Vec<Value>>,
}

/// One run of the grid.
#[derive(Clone, Debug)]
pub struct Point {
    /// Every axis key with its value here, in axis order.
    pub values: Vec<(String, Value)>,
    /// The base config with these values set.
    pub config: Table,
}

impl Grid {
    /// Reads a grid file; a `base` path is relative to the file's directory.
    pub fn load(path: &Path) -> Result<Grid, SweepError> {
        let text = samlab_core::run_dir::read_text(path).map_err(|e| {
            SweepError::Invalid(format!("cannot read the grid file {}: {e}", path.display()))
        })?;
        Grid::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| prefix(e, &path.display().to_string()))
    }

    /// Parses a grid file's text; `dir` resolves a `base` path.
    pub fn parse(text: &str, dir: &Path) -> Result<Grid, SweepError> {
        let mut table: Table =
            toml::from_str(text).map_err(|e| SweepError::Invalid(format!("not TOML: {e}")))?;
        if let Some(key) = table
            .keys()
            .find(|k| !["base", "axes", "zip"].contains(&k.as_str()))
        {
            return invalid(format!(
                "unknown key `{key}` (a grid has `base`, `[axes]` and `[[zip]]`)"
            ));
        }
        let base = match table.remove("base") {
            Some(Value::Table(t)) => t,
            Some(Value::String(file)) => {
                let path = dir.join(file);
                let text = samlab_core::run_dir::read_text(&path).map_err(|e| {
                    SweepError::Invalid(format!(
                        "cannot read the base config {}: {e}",
                        path.display()
                    ))
                })?;
                toml::from_str(&text).map_err(|e| {
                    SweepError::Invalid(format!("base {} is not TOML: {e}", path.display()))
                })?
            }
            Some(other) => {
                return invalid(format!(
                    "`base` must be a table or the path of a config.toml, got {other}"
                ))
            }
            None => return invalid("no `base` config"),
        };
        let mut axes = Vec::new();
        match table.remove("axes") {
            None => {}
            Some(Value::Table(t)) => {
                for (key, values) in t {
                    let values = axis_values(&key, values)?;
                    axes.push(Axis {
                        keys: vec![key],
                        values: values.into_iter().map(|v| vec![v]).collect(),
                    });
                }
            }
            Some(_) => return invalid("`axes` must be a table of key = [values]"),
        }
        match table.remove("zip") {
            None => {}
            Some(Value::Array(groups)) => {
                for group in groups {
                    let Value::Table(t) = group else {
                        return invalid("each [[zip]] must be a table of key = [values]");
                    };
                    axes.push(zipped(t)?);
                }
            }
            Some(_) => return invalid("`zip` must be an array of tables ([[zip]])"),
        }
        let mut seen = std::collections::BTreeSet::new();
        for key in axes.iter().flat_map(|a| &a.keys) {
            if !seen.insert(key) {
                return invalid(format!("key `{key}` is on two axes"));
            }
        }
        Ok(Grid { base, axes })
    }

    /// Every run of the grid, in loop order; at most [`MAX_RUNS`].
    pub fn points(&self) -> Result<Vec<Point>, SweepError> {
        let count = self
            .axes
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
            .filter(|&n| n <= MAX_RUNS)
            .ok_or_else(|| {
                SweepError::Invalid(format!("the grid makes more than {MAX_RUNS} runs"))
            })?;
        let mut points = Vec::with_capacity(count);
        for n in 0..count {
            let mut config = self.base.clone();
            let mut values = Vec::new();
            let mut rest = n;
            let mut picks = vec![0; self.axes.len()];
            for (i, axis) in self.axes.iter().enumerate().rev() {
                picks[i] = rest % axis.values.len();
                rest /= axis.values.len();
            }
            for (axis, &pick) in self.axes.iter().zip(&picks) {
                for (key, value) in axis.keys.iter().zip(&axis.values[pick]) {
                    set(&mut config, key, value.clone())?;
                    values.push((key.clone(), value.clone()));
                }
            }
            points.push(Point { values, config });
        }
        Ok(points)
    }
}

fn prefix(e: SweepError, what: &str) -> SweepError {
    match e {
        SweepError::Invalid(m) => SweepError::Invalid(format!("grid {what}: {m}")),
        other => other,
    }
}

fn axis_values(key: &str, values: Value) -> Result<Vec<Value>, SweepError> {
    match values {
        Value::Array(v) if !v.is_empty() => Ok(v),
        Value::Array(_) => invalid(format!("axis `{key}` is empty")),
        other => invalid(format!(
            "axis `{key}` must be an array of values, got {other}"
        )),
    }
}

fn zipped(t: Table) -> Result<Axis, SweepError> {
    let mut keys = Vec::new();
    let mut columns = Vec::new();
    for (key, values) in t {
        columns.push(axis_values(&key, values)?);
        keys.push(key);
    }
    let Some(len) = columns.first().map(Vec::len) else {
        return invalid("a [[zip]] group is empty");
    };
    if let Some((k, c)) = keys.iter().zip(&columns).find(|(_, c)| c.len() != len) {
        return invalid(format!(
            "zipped axes differ in length: `{}` has {len} values, `{k}` has {}",
            keys[0],
            c.len()
        ));
    }
    let values = (0..len)
        .map(|i| columns.iter().map(|c| c[i].clone()).collect())
        .collect();
    Ok(Axis { keys, values })
}

/// Sets the dotted `key` of `config` to `value`, creating missing tables.
fn set(config: &mut Table, key: &str, value: Value) -> Result<(), SweepError> {
    let mut parts = key.split('.').peekable();
    let mut table = config;
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return invalid(format!("axis key `{key}` has an empty part"));
        }
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return Ok(());
        }
        table = match table
            .entry(part)
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(t) => t,
            other => {
                return invalid(format!(
                    "axis key `{key}`: `{part}` is {} in the base config, not a table",
                    other.type_str()
                ))
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Grid, SweepError> {
        Grid::parse(text, Path::new("."))
    }

    #[test]
    fn products_and_zips_expand_in_loop_order() {
        let g = parse(
            "[base]\nseed = 0\n[base.train]\nlr = 0.1\n[axes]\n\"train.rho\" = [0.0, 0.5]\n\
             [[zip]]\nseed = [1, 2, 3]\n\"train.lr\" = [0.1, 0.2, 0.3]\n",
        )
        .unwrap();
        let points = g.points().unwrap();
        assert_eq!(points.len(), 6);
        let row = |p: &Point| {
            let t = p.config["train"].as_table().unwrap();
            (
                t["rho"].as_float().unwrap(),
                p.config["seed"].as_integer().unwrap(),
                t["lr"].as_float().unwrap(),
            )
        };
        assert_eq!(row(&points[0]), (0.0, 1, 0.1));
        assert_eq!(row(&points[2]), (0.0, 3, 0.3));
        assert_eq!(row(&points[3]), (0.5, 1, 0.1));
        assert_eq!(points[5].values.len(), 3);
    }

    #[test]
    fn bad_grids_name_the_problem() {
        for (text, expect) in [
            ("[base]\n[axes]\nrho = []\n", "axis `rho` is empty"),
            ("[base]\n[axes]\nrho = 1\n", "must be an array"),
            (
                "[base]\n[[zip]]\na = [1, 2]\nb = [1]\n",
                "`a` has 2 values, `b` has 1",
            ),
            ("bogus = 1\n[base]\n", "unknown key `bogus`"),
            ("[axes]\nrho = [1]\n", "no `base`"),
            (
                "[base]\n[axes]\nrho = [1]\n[[zip]]\nrho = [2]\n",
                "two axes",
            ),
            ("[base]\nrho = 1\n[axes]\n\"rho.x\" = [1]\n", "not a table"),
            ("[base]\n[axes]\n\"a..b\" = [1]\n", "empty part"),
        ] {
            let err = parse(text).and_then(|g| g.points()).unwrap_err();
            assert!(
                err.is_bad_input() && err.to_string().contains(expect),
                "{text}: {err}"
            );
        }
        let huge = format!(
            "[base]\n[axes]\n{}",
            (0..6)
                .map(|i| format!("a{i} = [{}]\n", ["1"; 10].join(",")))
                .collect::<String>()
        );
        let err = parse(&huge).unwrap().points().unwrap_err();
        assert!(err.to_string().contains("more than 100000 runs"), "{err}");
    }
}

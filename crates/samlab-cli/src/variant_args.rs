//! `--variant` and its options, for every `train` command and `bench-step`, built from the variant table
//! ([`VARIANTS`]): `--variant` takes the table's names with their one-line rules as help, and each option name of the
//! table is a flag `--variant-<name>` whose help names the variants that take it and their defaults. A new variant
//! gets its flags from its row.

use std::sync::OnceLock;

use anyhow::{bail, Result};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{value_parser, Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use samlab_core::sam::{Variant, VariantInfo, VARIANTS};

use crate::UsageError;

/// `--variant` and the `--variant-*` options given.
#[derive(Debug, Default)]
pub struct VariantArgs {
    /// The row of the variant `--variant` names.
    pub variant: Option<&'static VariantInfo>,
    /// The `--variant-*` options given: each option's name and its value as config.toml writes it, in the order of
    /// the flags.
    pub options: Vec<(&'static str, toml::Value)>,
}

/// One `--variant-*` flag: an option name of the table and what clap needs of it.
struct Flag {
    /// The option's name in config.toml.
    name: &'static str,
    /// The CLI names of the variants that take it.
    owners: Vec<&'static str>,
    long: String,
    value_name: String,
    help: String,
    /// An integer option (LookSAM's period), not a float.
    integer: bool,
}

/// The value of option `name` in `variant` (its field, as config.toml writes it).
fn field(variant: Variant, name: &str) -> toml::Value {
    toml::Value::try_from(variant).expect("a variant serializes")[name].clone()
}

/// Every option name of the table, in the order of first appearance, with its owners, help and type.
fn flags() -> &'static [Flag] {
    static FLAGS: OnceLock<Vec<Flag>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let mut flags: Vec<Flag> = Vec::new();
        for option in VARIANTS.iter().flat_map(|row| row.options) {
            if flags.iter().any(|f| f.name == option.name) {
                continue;
            }
            let rows: Vec<&VariantInfo> = VARIANTS
                .iter()
                .filter(|row| row.options.iter().any(|o| o.name == option.name))
                .collect();
            let show = |row: &VariantInfo| match field(row.default, option.name) {
                toml::Value::Float(x) => format!("{x}"),
                other => other.to_string(),
            };
            let whose: Vec<String> = rows.iter().map(|r| format!("{}'s", r.label)).collect();
            let defaults = match rows.as_slice() {
                [one] => show(one),
                many => many
                    .iter()
                    .map(|r| format!("{} for {}", show(r), r.label))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            flags.push(Flag {
                name: option.name,
                owners: rows.iter().map(|r| r.name).collect(),
                long: format!("variant-{}", option.name),
                value_name: format!("VARIANT_{}", option.name.to_uppercase()),
                help: format!(
                    "{} {} [default: {defaults}]",
                    whose.join(" and "),
                    option.doc
                ),
                integer: field(rows[0].default, option.name).is_integer(),
            });
        }
        flags
    })
}

impl Args for VariantArgs {
    fn augment_args(cmd: Command) -> Command {
        let names = VARIANTS
            .iter()
            .map(|row| PossibleValue::new(row.name).help(row.summary));
        let cmd = cmd.arg(
            Arg::new("variant")
                .long("variant")
                .value_name("VARIANT")
                .value_parser(PossibleValuesParser::new(names))
                .action(ArgAction::Set)
                .help(
                    "A variant of SAM, whose rule replaces the ascent (one normalized step from w)",
                ),
        );
        flags().iter().fold(cmd, |cmd, flag| {
            let arg = Arg::new(flag.long.as_str())
                .long(flag.long.as_str())
                .value_name(flag.value_name.as_str())
                .action(ArgAction::Set)
                .help(flag.help.as_str());
            cmd.arg(if flag.integer {
                arg.value_parser(value_parser!(usize))
            } else {
                arg.value_parser(value_parser!(f64))
            })
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for VariantArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = VariantArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        if let Some(name) = matches.get_one::<String>("variant") {
            self.variant = VARIANTS.iter().find(|row| row.name == name);
        }
        for flag in flags() {
            let id = flag.long.as_str();
            let value = if flag.integer {
                // A period beyond i64 (config.toml's integers) stays a usize here; `variant` refuses it.
                matches.get_one::<usize>(id).map(|&k| {
                    i64::try_from(k).map_or(toml::Value::Float(k as f64), toml::Value::Integer)
                })
            } else {
                matches.get_one::<f64>(id).map(|&x| toml::Value::Float(x))
            };
            if let Some(value) = value {
                self.options.retain(|(name, _)| *name != flag.name);
                self.options.push((flag.name, value));
            }
        }
        Ok(())
    }
}

impl VariantArgs {
    /// The variant `--variant` names, with its options (each defaulted); an option of another variant is an error.
    pub fn variant(&self) -> Result<Option<Variant>> {
        for (name, value) in &self.options {
            let flag = flags().iter().find(|f| f.name == *name).expect("a flag");
            if !self
                .variant
                .is_some_and(|row| flag.owners.contains(&row.name))
            {
                bail!(UsageError(format!(
                    "--variant-{name} is an option of --variant {}",
                    flag.owners.join(" / ")
                )));
            }
            if flag.integer && !value.is_integer() {
                bail!(UsageError(format!(
                    "--variant-{name} is too large, got {value}"
                )));
            }
        }
        let Some(row) = self.variant else {
            return Ok(None);
        };
        let mut variant = toml::Value::try_from(row.default).expect("a variant serializes");
        let table = variant.as_table_mut().expect("a variant is a table");
        for (name, value) in &self.options {
            table.insert(name.to_string(), value.clone());
        }
        Ok(Some(variant.try_into()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Option<Variant>> {
        let cmd = VariantArgs::augment_args(Command::new("t"));
        let matches = cmd.try_get_matches_from([&["t"], flags].concat())?;
        VariantArgs::from_arg_matches(&matches)?.variant()
    }

    /// `--variant NAME` is the row's default; each of its options is laid over it.
    #[test]
    fn every_variant_and_option_of_the_table_has_its_flag() {
        assert_eq!(parse(&[]).unwrap(), None);
        for row in &VARIANTS {
            assert_eq!(parse(&["--variant", row.name]).unwrap(), Some(row.default));
            for option in row.options {
                let flag = format!("--variant-{}", option.name);
                let got = parse(&["--variant", row.name, &flag, "1"])
                    .unwrap()
                    .unwrap();
                assert_eq!(field(got, option.name).as_float().unwrap_or(1.0), 1.0);
                assert_eq!(field(got, option.name).as_integer().unwrap_or(1), 1);
            }
        }
        assert_eq!(
            parse(&["--variant", "looksam", "--variant-k", "3"]).unwrap(),
            Some(Variant::LookSam { k: 3, alpha: 0.7 })
        );
    }

    #[test]
    fn an_option_of_another_variant_is_refused_naming_its_variants() {
        let err = parse(&["--variant", "gsam", "--variant-eta", "1"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--variant-eta is an option of --variant asam / fisher-sam"
        );
        let err = parse(&["--variant-k", "3"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--variant-k is an option of --variant looksam"
        );
    }

    /// The help of each flag names the variants that take it and their defaults.
    #[test]
    fn flag_help_is_generated_from_the_table() {
        let help: Vec<&str> = flags().iter().map(|f| f.help.as_str()).collect();
        assert_eq!(
            help[..2],
            [
                "ASAM's and Fisher-SAM's eta [default: 0.01 for ASAM, 1 for Fisher-SAM]",
                "GSAM's and LookSAM's alpha [default: 0.1 for GSAM, 0.7 for LookSAM]",
            ]
        );
        assert!(help.contains(&"LookSAM's period k [default: 5]"));
    }
}

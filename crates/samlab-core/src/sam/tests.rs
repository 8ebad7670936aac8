use super::*;

#[test]
fn default_is_erm_and_round_trips_through_toml() {
    let mut c = SamConfig::usam(0.1, Grouping::Size(4));
    c.window = ActiveWindow {
        start: 0.5,
        end: 1.0,
    };
    c.rho_schedule = RhoSchedule::ProportionalToLr { factor: 2.0 };
    let text = toml::to_string(&c).unwrap();
    let back: SamConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, c);
    assert_eq!(SamConfig::erm().rho, 0.0);
}

#[test]
fn check_rejects_bad_values_naming_them() {
    let err = SamConfig::usam(0.1, Grouping::Size(3))
        .check(20)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid m: group size 3 must divide the batch size 20"
    );
    let err = SamConfig::usam(-1.0, Grouping::WholeBatch)
        .check(20)
        .unwrap_err();
    assert!(err.to_string().contains("rho"), "{err}");
    for rho in [1e20, f64::INFINITY, f64::NAN] {
        let err = SamConfig::usam(rho, Grouping::WholeBatch)
            .check(20)
            .unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
    }
    assert!(SamConfig::usam(1e19, Grouping::WholeBatch)
        .check(20)
        .is_ok());
    let mut c = SamConfig::usam(0.1, Grouping::WholeBatch);
    c.window = ActiveWindow {
        start: 0.9,
        end: 0.1,
    };
    assert!(c.check(20).is_err());
}

#[test]
fn rho_follows_window_and_schedule() {
    let mut c = SamConfig::usam(0.3, Grouping::Size(1));
    c.window = ActiveWindow {
        start: 0.5,
        end: 0.75,
    };
    let s = c.check(10).unwrap();
    assert_eq!(s.group_size(), 1);
    assert_eq!(s.rho_at(0.49, 1.0), 0.0);
    assert_eq!(s.rho_at(0.5, 1.0), 0.3);
    assert_eq!(s.rho_at(0.75, 1.0), 0.0);
    c.window.end = 1.0;
    c.rho_schedule = RhoSchedule::ProportionalToLr { factor: 2.0 };
    // A constant radius beside one tied to the learning rate would be recorded but never run.
    let err = c.check_applies().unwrap_err().to_string();
    assert!(
        err.contains("rho = 0.3 and rho_schedule proportional_to_lr"),
        "{err}"
    );
    c.rho = 0.0;
    let s = c.check(10).unwrap();
    assert_eq!(s.rho_at(1.0, 0.25), 0.5);
    assert_eq!(SamConfig::erm().check(7).unwrap().group_size(), 7);
}

/// Without a radius there is no ascent: every option that shapes one is refused, naming it and the radius.
#[test]
fn ascent_options_without_a_radius_are_refused() {
    // Run configs refuse them; the checked config of a trainer does not.
    let multi = SamConfig {
        ascent_steps: 3,
        ..SamConfig::erm()
    };
    assert!(multi.check(4).is_ok());
    let erm = SamConfig::erm();
    for (c, expect) in [
        (
            SamConfig {
                variant: Variant::Asam { eta: 0.01 },
                ..erm.clone()
            },
            "the variant ASAM needs a SAM radius, but rho = 0",
        ),
        (
            SamConfig {
                ascent_steps: 3,
                ..erm.clone()
            },
            "ascent_steps = 3",
        ),
        (
            SamConfig {
                random_init: true,
                ..erm.clone()
            },
            "random_init",
        ),
        (
            SamConfig {
                perturbation: Perturbation::Random,
                ..erm.clone()
            },
            "random perturbations",
        ),
        (
            SamConfig {
                variant: Variant::Gsam { alpha: 0.1 },
                rho_schedule: RhoSchedule::ProportionalToLr { factor: 0.0 },
                ..erm.clone()
            },
            "GSAM",
        ),
    ] {
        let err = c.check_applies().unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
    // A radius tied to the learning rate is a radius.
    let gsam = SamConfig {
        variant: Variant::Gsam { alpha: 0.1 },
        rho_schedule: RhoSchedule::ProportionalToLr { factor: 1.0 },
        ..erm
    };
    gsam.check_applies().unwrap();
}

/// `kind = "sam"` (and the other kinds without options) takes no other key.
#[test]
fn optionless_variants_refuse_unknown_keys() {
    let parse =
        |variant: &str| toml::from_str::<SamConfig>(&format!("rho = 0.1\n[variant]\n{variant}"));
    assert_eq!(parse("kind = \"sam\"").unwrap().variant, Variant::Sam);
    assert_eq!(
        parse("kind = \"asam\"\neta = 0.5").unwrap().variant,
        Variant::Asam { eta: 0.5 }
    );
    for bad in [
        "kind = \"sam\"\neta = 3.0",
        "kind = \"msam\"\nk = 1",
        "kind = \"asam\"\neta = 1.0\nbogus = 1",
    ] {
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{bad}: {err}");
    }
}

#[test]
fn variant_options_are_checked_naming_them() {
    let with = |variant| SamConfig {
        rho: 0.1,
        variant,
        ..SamConfig::default()
    };
    let err = |variant, batch| with(variant).check(batch).unwrap_err().to_string();
    assert!(err(Variant::Vasso { theta: 0.0 }, 8).contains("theta"));
    assert!(err(Variant::Vasso { theta: 1.5 }, 8).contains("theta"));
    assert!(err(Variant::LookSam { k: 0, alpha: 0.7 }, 8).contains("invalid k"));
    assert!(err(
        Variant::Esam {
            beta: 0.0,
            gamma: 0.5
        },
        8
    )
    .contains("beta"));
    assert!(err(
        Variant::Esam {
            beta: 0.5,
            gamma: 1.1
        },
        8
    )
    .contains("gamma"));
    assert!(err(Variant::Asam { eta: -0.1 }, 8).contains("eta"));
    assert!(err(Variant::FisherSam { eta: f64::NAN }, 8).contains("eta"));
    assert!(err(
        Variant::Gsam {
            alpha: f64::INFINITY
        },
        8
    )
    .contains("alpha"));
    assert!(err(
        Variant::Fsam {
            sigma: 1.0,
            lambda: 1.0
        },
        8
    )
    .contains("lambda"));
    let mut grouped = with(Variant::Vasso { theta: 0.5 });
    grouped.grouping = Grouping::Size(2);
    assert!(grouped
        .check(8)
        .unwrap_err()
        .to_string()
        .contains("whole batch"));
    // Stateless variants take groups; m = the batch is the whole batch.
    grouped.variant = Variant::Asam { eta: 0.01 };
    assert!(grouped.check(8).is_ok());
    grouped.variant = Variant::Vasso { theta: 0.5 };
    assert!(grouped.check(2).is_ok());
    // MSAM needs a momentum buffer and SAM-ON normalization layers; the other variants need neither.
    let layers = |v, momentum, normalization| {
        with(v)
            .check(8)
            .unwrap()
            .require_layers("x", momentum, normalization)
            .map_err(|e| e.to_string())
    };
    assert!(layers(Variant::Msam, false, true)
        .unwrap_err()
        .contains("momentum"));
    assert!(layers(Variant::SamOn, true, false)
        .unwrap_err()
        .contains("normalization"));
    assert!(layers(Variant::Msam, true, false).is_ok());
    assert!(layers(Variant::SamOn, false, true).is_ok());
    assert!(layers(Variant::Asam { eta: 0.01 }, false, false).is_ok());
    // A variant round-trips through TOML.
    let c = with(Variant::LookSam { k: 5, alpha: 0.7 });
    assert_eq!(
        toml::from_str::<SamConfig>(&toml::to_string(&c).unwrap()).unwrap(),
        c
    );
}

/// The table has one row for every member of [`Variant`], in the enum's order: serde's error for an unknown
/// kind lists the members, so a member without a row fails here. Each row's default is its own member, with the
/// member's fields as its options and in range; its reducing options are its own member's too.
#[test]
fn the_variant_table_has_every_variant() {
    let err = toml::from_str::<toml::Value>("kind = \"?\"")
        .unwrap()
        .try_into::<Variant>()
        .unwrap_err()
        .to_string();
    let listed = err.split("expected one of ").nth(1).expect(&err);
    let members: Vec<&str> = listed
        .lines()
        .next()
        .unwrap()
        .split(", ")
        .map(|k| k.trim_matches('`'))
        .collect();
    let kinds: Vec<&str> = VARIANTS.iter().map(|r| r.kind).collect();
    assert_eq!(members, kinds, "{err}");
    let mut names: Vec<&str> = VARIANTS.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), VARIANTS.len(), "the CLI's names are unique");
    for row in &VARIANTS {
        assert_eq!(row.default.info(), row);
        let value = toml::Value::try_from(row.default).unwrap();
        let table = value.as_table().unwrap();
        assert_eq!(table["kind"].as_str(), Some(row.kind));
        let mut fields: Vec<&str> = table
            .keys()
            .filter(|k| *k != "kind")
            .map(String::as_str)
            .collect();
        let mut options: Vec<&str> = row.options.iter().map(|o| o.name).collect();
        fields.sort_unstable();
        options.sort_unstable();
        assert_eq!(fields, options, "{}", row.name);
        row.default.check().unwrap();
        if let Some(reducing) = row.reducing {
            assert_eq!(reducing.info(), row);
            reducing.check().unwrap();
        }
    }
    assert_eq!(Variant::DEFAULTS[6], Variant::LookSam { k: 5, alpha: 0.7 });
}

#[test]
fn unknown_fields_are_rejected() {
    assert!(toml::from_str::<SamConfig>("rho = 0.1\nrhoo = 2").is_err());
}

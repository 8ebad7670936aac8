use super::*;

fn read_ihdr(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

fn loglog_figure() -> Figure {
    let steps: Vec<f64> = (0..40).map(|i| 10f64.powf(1.0 + i as f64 * 0.1)).collect();
    Figure {
        title: "Training loss vs steps".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        series: vec![
            Series::new("ERM", steps.iter().map(|&s| (s, 3.0 / s.sqrt())).collect()),
            Series {
                name: "SAM rho=0.05".into(),
                points: steps.iter().map(|&s| (s, 2.0 / s.powf(0.6))).collect(),
                dashed: true,
                markers: true,
                color: None,
                band: vec![],
            },
        ],
        vlines: vec![],
        y_range: None,
    }
}

#[test]
fn loglog_renders_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("loss");
    let (svg, png) = render(&loglog_figure(), &stem).unwrap();
    assert_eq!(svg, dir.path().join("loss.svg"));
    assert_eq!(png, dir.path().join("loss.png"));

    let svg_text = fs::read_to_string(&svg).unwrap();
    assert!(svg_text.contains("<svg"));
    assert!(svg_text.contains("Training loss vs steps"));
    assert!(svg_text.contains("ERM"));
    assert!(svg_text.contains("SAM rho=0.05"));

    let bytes = fs::read(&png).unwrap();
    assert!(bytes.starts_with(PNG_MAGIC));
    assert_eq!(read_ihdr(&bytes), (900, 600));

    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn bad_points_on_log_axes_are_dropped() {
    let mut fig = loglog_figure();
    fig.series[0].points.extend([
        (f64::NAN, 1.0),
        (10.0, f64::NAN),
        (-5.0, 1.0),
        (10.0, -1.0),
        (0.0, 1.0),
        (f64::INFINITY, 2.0),
    ]);
    fig.series
        .push(Series::new("only bad", vec![(-1.0, 1.0), (f64::NAN, 2.0)]));
    let prepared = prepare(&fig).unwrap();
    assert_eq!(prepared.series.len(), 2, "the all-bad series is skipped");
    assert_eq!(prepared.series[0].points.len(), 40);
    assert!(prepared.x.lo == 1.0 && prepared.x.hi == 5.0);

    let dir = tempfile::tempdir().unwrap();
    let (svg, png) = render(&fig, &dir.path().join("bad")).unwrap();
    assert!(svg.exists() && png.exists());
}

/// Past the palette's colours, series are dashed: no two lines of a figure look alike.
#[test]
fn series_past_the_palette_are_dashed() {
    let mut fig = loglog_figure();
    fig.series.truncate(1);
    for k in 1..PALETTE.len() + 2 {
        fig.series.push(Series::new(
            format!("s{k}"),
            vec![(1.0, 1.0), (10.0, k as f64)],
        ));
    }
    let prepared = prepare(&fig).unwrap();
    let dashed: Vec<bool> = prepared.series.iter().map(|s| s.dashed).collect();
    assert_eq!(dashed.iter().filter(|&&d| d).count(), 2, "{dashed:?}");
    assert!(dashed[PALETTE.len()] && dashed[PALETTE.len() + 1]);
}

#[test]
fn all_empty_is_no_data() {
    let fig = Figure {
        title: "empty".into(),
        y_scale: Scale::Log,
        series: vec![
            Series::new("a", vec![]),
            Series::new("b", vec![(1.0, -1.0), (f64::NAN, 1.0)]),
        ],
        ..Figure::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("empty");
    match render(&fig, &stem) {
        Err(PlotError::NoData(title)) => assert_eq!(title, "empty"),
        other => panic!("expected NoData, got {other:?}"),
    }
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    assert!(matches!(
        render(&Figure::default(), &stem),
        Err(PlotError::NoData(_))
    ));
}

#[test]
fn vlines_render_and_appear_in_legend() {
    let fig = Figure {
        title: "Sharpness".into(),
        x_label: "epoch".into(),
        y_label: "λ_max".into(),
        series: vec![Series::new(
            "SAM",
            (0..50)
                .map(|i| (i as f64, 10.0 + (i as f64 * 0.3).sin()))
                .collect(),
        )],
        vlines: vec![
            (25.0, "switch to 1-SAM".into()),
            (f64::NAN, "ignored".into()),
        ],
        ..Figure::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (svg, png) = render(&fig, &dir.path().join("sub/sharp")).unwrap();
    let svg_text = fs::read_to_string(svg).unwrap();
    assert!(svg_text.contains("switch to 1-SAM"));
    assert!(!svg_text.contains("ignored"));
    assert!(fs::read(png).unwrap().starts_with(PNG_MAGIC));
}

#[test]
fn ranges() {
    // Log: whole decades around the data.
    let a = auto_axis(0.3f64.log10(), 20f64.log10(), Scale::Log);
    assert_eq!((a.lo, a.hi), (-1.0, 2.0));
    assert_eq!(a.ticks, vec![-1.0, 0.0, 1.0, 2.0]);
    // Log, degenerate at an exact decade.
    let a = auto_axis(0.0, 0.0, Scale::Log);
    assert_eq!((a.lo, a.hi), (-1.0, 1.0));
    // Linear: 5% margin.
    let a = auto_axis(0.0, 10.0, Scale::Linear);
    assert!((a.lo + 0.5).abs() < 1e-12 && (a.hi - 10.5).abs() < 1e-12);
    // Linear degenerate: widened.
    let a = auto_axis(3.0, 3.0, Scale::Linear);
    assert!(a.lo < 3.0 && a.hi > 3.0);
    let a = auto_axis(0.0, 0.0, Scale::Linear);
    assert!(a.lo < 0.0 && a.hi > 0.0);
    // Extreme spans do not blow up the tick computation.
    let a = auto_axis(-1e308, 1e308, Scale::Linear);
    assert!(a.ticks.len() <= 101);
}

#[test]
fn labels() {
    assert_eq!(log_label(-3.0), "10⁻³");
    assert_eq!(log_label(0.0), "10⁰");
    assert_eq!(log_label(12.0), "10¹²");
    assert_eq!(log_label(2f64.log10() - 1.0), "2×10⁻¹");
    assert_eq!(linear_label(0.25, 0.05), "0.25");
    assert_eq!(linear_label(-0.0, 0.5), "0.0");
    assert_eq!(linear_label(40.0, 20.0), "40");
}

#[test]
fn fixed_y_range_clips_and_validates() {
    let mut fig = loglog_figure();
    fig.y_range = Some((0.01, 0.1));
    let dir = tempfile::tempdir().unwrap();
    render(&fig, &dir.path().join("clip")).unwrap();
    fig.y_range = Some((-1.0, 1.0));
    assert!(matches!(
        render(&fig, &dir.path().join("bad")),
        Err(PlotError::InvalidRange(_))
    ));

    let runs = clip_polyline(
        &[(0.0, 0.0), (2.0, 2.0), (4.0, 0.0)],
        &(0.0..4.0),
        &(0.0..1.0),
    );
    assert_eq!(
        runs,
        vec![vec![(0.0, 0.0), (1.0, 1.0)], vec![(3.0, 1.0), (4.0, 0.0)]]
    );
}

#[test]
fn nan_points_split_a_series_into_pieces_of_one_colour() {
    let fig = Figure {
        series: vec![Series {
            name: "data".into(),
            points: vec![
                (0.0, 1.0),
                (f64::NAN, f64::NAN),
                (1.0, 2.0),
                (2.0, f64::INFINITY),
                (3.0, 0.5),
            ],
            dashed: false,
            markers: true,
            color: None,
            band: vec![],
        }],
        ..Figure::new("scatter", "x", "y")
    };
    let p = prepare(&fig).unwrap();
    let pieces: Vec<(usize, &str, usize)> = p
        .series
        .iter()
        .map(|s| (s.index, s.name.as_str(), s.points.len()))
        .collect();
    assert_eq!(pieces, vec![(0, "data", 1), (0, "", 2)]);
    let dir = tempfile::tempdir().unwrap();
    render(&fig, &dir.path().join("scatter")).unwrap();
}

#[test]
fn bands_widen_the_auto_range_and_colours_can_be_shared() {
    let fig = Figure {
        series: vec![
            Series {
                band: vec![(1.0, 0.5, 3.0), (2.0, 1.0, 4.0), (3.0, f64::NAN, 1.0)],
                ..Series::new("mean", vec![(1.0, 1.0), (2.0, 2.0)])
            },
            Series {
                color: Some(0),
                dashed: true,
                ..Series::new("same colour", vec![(1.0, 1.5), (2.0, 2.5)])
            },
        ],
        ..Figure::new("band", "x", "y")
    };
    let p = prepare(&fig).unwrap();
    assert_eq!((p.series[0].index, p.series[1].index), (0, 0));
    // Highs left to right, then lows right to left; the point with a NaN is dropped.
    assert_eq!(
        p.series[0].band,
        vec![(1.0, 3.0), (2.0, 4.0), (2.0, 1.0), (1.0, 0.5)]
    );
    assert!(p.y.lo <= 0.5 && p.y.hi >= 4.0, "{} {}", p.y.lo, p.y.hi);
    let dir = tempfile::tempdir().unwrap();
    let (svg, _) = render(&fig, &dir.path().join("band")).unwrap();
    assert!(std::fs::read_to_string(svg).unwrap().contains("<polygon"));
}

/// Renders example figures into the temp directory for visual inspection:
/// `cargo test -p samlab-report render_example -- --ignored`.
#[test]
#[ignore = "writes example figures to the temp dir for manual inspection"]
fn render_example() {
    let steps: Vec<f64> = (0..=30).map(|i| 10f64.powf(1.0 + i as f64 * 0.1)).collect();
    let mut fig = loglog_figure();
    fig.title = "Test loss, ResNet-18 on CIFAR-10 (label noise 20%)".into();
    fig.x_label = "training step".into();
    fig.y_label = "test loss".into();
    fig.series.push(Series {
        name: "1-SAM".into(),
        points: steps.iter().map(|&s| (s, 1.5 / s.powf(0.7))).collect(),
        dashed: false,
        markers: true,
        color: None,
        band: vec![],
    });
    fig.series.push(Series {
        name: "m-SAM (m=128)".into(),
        points: steps.iter().map(|&s| (s, 2.5 / s.powf(0.55))).collect(),
        dashed: true,
        markers: false,
        color: None,
        band: vec![],
    });
    fig.vlines = vec![(300.0, "switch to 1-SAM".into())];
    let tmp = std::env::temp_dir();
    let (_, png) = render(&fig, &tmp.join("plot_example")).unwrap();
    eprintln!("wrote {}", png.display());

    let lin = Figure {
        title: "Sharpness during training".into(),
        x_label: "epoch".into(),
        y_label: "λ_max of the Hessian".into(),
        series: (0..4)
            .map(|k| {
                Series::new(
                    format!("rho = {:.2}", 0.05 * k as f64),
                    (0..=100)
                        .map(|e| {
                            let e = e as f64;
                            (
                                e,
                                40.0 / (1.0 + k as f64) + 5.0 * (e / 15.0).sin() - 0.1 * e,
                            )
                        })
                        .collect(),
                )
            })
            .collect(),
        vlines: vec![(60.0, "lr decay".into())],
        ..Figure::default()
    };
    let (_, png) = render(&lin, &tmp.join("plot_example_linear")).unwrap();
    eprintln!("wrote {}", png.display());
}

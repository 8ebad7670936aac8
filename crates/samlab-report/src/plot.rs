//! Line-chart figures for research reports, rendered to SVG and PNG.
//!
//! A [`Figure`] holds any number of [`Series`] (lines with optional markers
//! and dashes) and vertical marker lines; [`render`] writes `<stem>.svg` and a
//! 900x600 `<stem>.png` next to each other. Text in the PNG is rasterised with
//! the bundled DejaVu Sans font, so the output never depends on system fonts.
//!
//! Logarithmic axes are implemented by plotting `log10` of the data on a
//! linear coordinate system with hand-picked ticks, which keeps full control
//! over decade ticks and their `10⁻³`-style labels.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, GlyphId, ScaleFont};
use plotters::chart::SeriesAnno;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind, FontStyle as BackendFontStyle,
};
use samlab_core::run_dir::write_atomic;

/// Width of the PNG output in pixels (the SVG uses the same canvas size).
const WIDTH: u32 = 900;
/// Height of the PNG output in pixels (the SVG uses the same canvas size).
const HEIGHT: u32 = 600;
/// The font family every text element uses; registered from DejaVu Sans.
const FONT: &str = "sans-serif";
/// Title font size in pixels.
const TITLE_SIZE: u32 = 22;
/// Legend font size in pixels.
const LEGEND_SIZE: u32 = 16;
/// Axis description (x/y label) font size in pixels.
const AXIS_DESC_SIZE: u32 = 18;
/// Tick label font size in pixels.
const TICK_SIZE: u32 = 16;
/// Stroke width of series lines and vertical marker lines.
const LINE_WIDTH: u32 = 2;
/// Opacity of a series' shaded band.
const BAND_ALPHA: f64 = 0.18;
/// Radius of point markers.
const MARKER_RADIUS: u32 = 3;
/// Linear axes get this fraction of the data span added on each side.
const LINEAR_MARGIN: f64 = 0.05;

/// Okabe–Ito colour-blind-friendly palette (yellow omitted: it is unreadable
/// on white). The first colour is black so that a leading baseline series
/// (e.g. ERM) stands out neutrally.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 0, 0),       // black
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
];
/// Colour of vertical marker lines.
const VLINE_COLOR: RGBColor = RGBColor(110, 110, 110);
/// Colour of the major grid lines.
const GRID_MAJOR: RGBColor = RGBColor(215, 215, 215);
/// Colour of the minor grid lines.
const GRID_MINOR: RGBColor = RGBColor(238, 238, 238);

/// How an axis maps data values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// Evenly spaced values; the range gets a 5% margin on each side.
    #[default]
    Linear,
    /// Base-10 logarithmic; non-positive values are dropped and the range
    /// spans whole decades.
    Log,
}

/// One line of a [`Figure`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend label; an empty name leaves the series out of the legend.
    pub name: String,
    /// `(x, y)` data points, drawn in the given order. A point with a NaN
    /// coordinate ends the line there (a gap; with `markers`, NaNs between
    /// points give a scatter plot); infinite coordinates (and non-positive
    /// ones on a log axis) are dropped.
    pub points: Vec<(f64, f64)>,
    /// Draw the line dashed instead of solid.
    pub dashed: bool,
    /// Draw a small filled circle at every point.
    pub markers: bool,
    /// A shaded band `(x, low, high)` in the series' colour behind its line (e.g. the spread over seeds);
    /// empty for none. Points with a coordinate that cannot be shown are dropped.
    pub band: Vec<(f64, f64, f64)>,
    /// Palette slot of the line, band and markers; `None` uses the series' position in the figure (so series
    /// of one method can share a colour, e.g. its test curve solid and its train curve dashed).
    pub color: Option<usize>,
}

impl Series {
    /// A solid line without markers.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
            markers: false,
            band: vec![],
            color: None,
        }
    }
}

/// A line chart: title, axes, series and vertical marker lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figure {
    /// Caption above the plot.
    pub title: String,
    /// Description of the x axis.
    pub x_label: String,
    /// Description of the y axis.
    pub y_label: String,
    /// Scale of the x axis.
    pub x_scale: Scale,
    /// Scale of the y axis.
    pub y_scale: Scale,
    /// The lines, coloured by their index in this vector.
    pub series: Vec<Series>,
    /// Vertical marker lines at the given x positions, drawn dashed grey,
    /// each with its label in the legend (e.g. `"switch to 1-SAM"`). An empty
    /// label leaves the line out of the legend.
    pub vlines: Vec<(f64, String)>,
    /// Fixed y range `(low, high)` in data units; when `None` the range is
    /// computed from the data. Lines leaving a fixed range are clipped.
    pub y_range: Option<(f64, f64)>,
}

impl Figure {
    /// An empty figure with linear axes.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Self::default()
        }
    }
}

/// Why a figure could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Creating, writing or renaming an output file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file (or directory) that could not be written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Drawing or encoding failed; the message names the output file.
    #[error("drawing failed: {0}")]
    Draw(String),
    /// No series had a single drawable point; holds the figure title.
    #[error("figure {0:?} has no drawable data points")]
    NoData(String),
    /// `Figure::y_range` is unusable (not finite, empty, or non-positive on
    /// a log axis); holds the figure title.
    #[error("figure {0:?} has an invalid y_range")]
    InvalidRange(String),
}

/// Writes `<stem>.svg` and `<stem>.png` (PNG 900x600) and returns their paths.
///
/// The extensions are appended to `stem` (a stem such as `out/loss.v2` gives
/// `out/loss.v2.svg`); missing parent directories are created. Each file is
/// written by [`write_atomic`], so readers never see a half-written figure.
///
/// # Errors
///
/// [`PlotError::NoData`] when no series has a drawable point,
/// [`PlotError::InvalidRange`] for an unusable `y_range`, and
/// [`PlotError::Io`] / [`PlotError::Draw`] when writing or drawing fails.
pub fn render(fig: &Figure, stem: &Path) -> Result<(PathBuf, PathBuf), PlotError> {
    ensure_font();
    let prepared = prepare(fig)?;

    let svg_path = with_suffix(stem, ".svg");
    let png_path = with_suffix(stem, ".png");
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| PlotError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, fig, &prepared)
            .and_then(|()| root.present())
            .map_err(|e| draw_error(&svg_path, e))?;
    }
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PlotError::Io { path, source }
    };
    write_atomic(&svg_path, |p| fs::write(p, &svg)).map_err(io_error(&svg_path))?;

    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let bitmap = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT));
        let root = GlyphText(bitmap).into_drawing_area();
        draw(&root, fig, &prepared)
            .and_then(|()| root.present())
            .map_err(|e| draw_error(&png_path, e))?;
    }
    let png = encode_png(&rgb)
        .map_err(|e| PlotError::Draw(format!("encoding {} failed: {e}", png_path.display())))?;
    write_atomic(&png_path, |p| fs::write(p, &png)).map_err(io_error(&png_path))?;

    Ok((svg_path, png_path))
}

/// A bitmap backend wrapper that rasterises text itself.
///
/// plotters 0.3.7's ab_glyph text path ignores each glyph's left side
/// bearing (so `rho = 0.1` comes out as `rho= 0. 1`) and puts the baseline
/// half an em below the layout box top. This wrapper draws glyphs at their
/// proper positions with kerning and centres the cap height in plotters'
/// layout box, so anchoring (which uses the same box) is unchanged.
struct GlyphText<B>(B);

/// The DejaVu Sans regular and bold faces, parsed once.
fn glyph_fonts() -> &'static (FontRef<'static>, FontRef<'static>) {
    static FONTS: OnceLock<(FontRef<'static>, FontRef<'static>)> = OnceLock::new();
    FONTS.get_or_init(|| {
        let parse = |bytes| FontRef::try_from_slice(bytes).expect("bundled DejaVu font is valid");
        (parse(dejavu::sans::regular()), parse(dejavu::sans::bold()))
    })
}

impl<B: DrawingBackend> DrawingBackend for GlyphText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_pixel(point, color)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }
    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        self.0.estimate_text_size(text, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let fonts = glyph_fonts();
        let font = match style.style() {
            BackendFontStyle::Bold => &fonts.1,
            _ => &fonts.0,
        };
        let font = font.as_scaled(style.size() as f32);
        let cap_height = font
            .outline_glyph(font.scaled_glyph('H'))
            .map_or(font.ascent() * 0.75, |g| -g.px_bounds().min.y);
        let baseline = (height as f32 + cap_height) / 2.0;

        let mut pixels: Vec<(i32, i32, f32)> = Vec::new();
        let mut caret = 0f32;
        let mut prev: Option<GlyphId> = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), point(caret, baseline));
            caret += font.h_advance(id);
            if let Some(outline) = font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                let (ox, oy) = (b.min.x as i32, b.min.y as i32);
                outline.draw(|x, y, cov| {
                    if cov > 0.0 {
                        pixels.push((ox + x as i32, oy + y as i32, cov));
                    }
                });
            }
        }

        let transform = style.transform();
        let (w, h) = self.get_size();
        for (x, y, cov) in pixels {
            let (tx, ty) = transform.transform(x + dx, y + dy);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if px >= 0 && py >= 0 && px < w as i32 && py < h as i32 {
                let alpha = color.alpha * f64::from(cov.min(1.0));
                self.0.draw_pixel(
                    (px, py),
                    BackendColor {
                        alpha,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Registers DejaVu Sans as the `sans-serif` family exactly once.
fn ensure_font() {
    static FONT_REGISTERED: OnceLock<()> = OnceLock::new();
    FONT_REGISTERED.get_or_init(|| {
        // The bundled fonts are valid TrueType files; a failure here would be
        // a packaging bug, which the first text draw then reports as an error.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// `stem` with `suffix` appended to its final component.
fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Encodes a `WIDTH`x`HEIGHT` RGB8 buffer as PNG.
fn encode_png(rgb: &[u8]) -> image::ImageResult<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        rgb,
        WIDTH,
        HEIGHT,
        image::ColorType::Rgb8,
    )?;
    Ok(out)
}

fn draw_error<E: std::error::Error + Send + Sync>(
    path: &Path,
    e: DrawingAreaErrorKind<E>,
) -> PlotError {
    PlotError::Draw(format!("rendering {} failed: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Data preparation (all coordinates below are in "plot space": log10 of the
// data on a log axis, the data itself on a linear axis).
// ---------------------------------------------------------------------------

/// One axis in plot space.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    /// Labelled ticks (bold grid lines).
    ticks: Vec<f64>,
    /// Unlabelled minor grid lines.
    minor: Vec<f64>,
    /// Spacing of `ticks` on a linear axis (drives label precision).
    step: f64,
}

/// The axis is its own plotters coordinate: linear in plot space, with our
/// ticks as bold key points and the minor lines as light key points.
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value - self.lo) / (self.hi - self.lo);
        let pixels = f64::from(limit.1 - limit.0) * frac;
        // Saturating float->int cast keeps far-away values harmless.
        limit.0 + pixels.round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl Axis {
    fn label(&self, v: f64) -> String {
        if self.log {
            log_label(v)
        } else {
            linear_label(v, self.step)
        }
    }
}

/// A series after filtering, in plot space.
struct PreparedSeries {
    /// Palette slot.
    index: usize,
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    markers: bool,
    /// The band as a closed polygon in plot space (empty for none).
    band: Vec<(f64, f64)>,
}

struct Prepared {
    x: Axis,
    y: Axis,
    series: Vec<PreparedSeries>,
    vlines: Vec<(f64, String)>,
}

/// Maps a data value to plot space, or `None` when it cannot be shown.
fn to_plot(v: f64, scale: Scale) -> Option<f64> {
    match scale {
        _ if !v.is_finite() => None,
        Scale::Linear => Some(v),
        Scale::Log if v > 0.0 => Some(v.log10()).filter(|l| l.is_finite()),
        Scale::Log => None,
    }
}

/// The band `(x, low, high)` as a polygon: along the highs, then back along the lows.
fn band_polygon(band: &[(f64, f64, f64)], fig: &Figure) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64, f64)> = band
        .iter()
        .filter_map(|&(x, lo, hi)| {
            Some((
                to_plot(x, fig.x_scale)?,
                to_plot(lo, fig.y_scale)?,
                to_plot(hi, fig.y_scale)?,
            ))
        })
        .collect();
    let upper = pts.iter().map(|&(x, _, hi)| (x, hi));
    let lower = pts.iter().rev().map(|&(x, lo, _)| (x, lo));
    upper.chain(lower).collect()
}

fn prepare(fig: &Figure) -> Result<Prepared, PlotError> {
    // A series is split at its NaN points into pieces of the same colour; only the first piece is named.
    let mut series: Vec<PreparedSeries> = vec![];
    for (index, s) in fig.series.iter().enumerate() {
        let first = series.len();
        for piece in s.points.split(|(x, y)| x.is_nan() || y.is_nan()) {
            let points: Vec<(f64, f64)> = piece
                .iter()
                .filter_map(|&(x, y)| Some((to_plot(x, fig.x_scale)?, to_plot(y, fig.y_scale)?)))
                .collect();
            if !points.is_empty() {
                series.push(PreparedSeries {
                    index: s.color.unwrap_or(index),
                    name: if series.len() == first {
                        s.name.clone()
                    } else {
                        String::new()
                    },
                    points,
                    // Past the palette, colours come round again: those series are dashed so that none looks
                    // like an earlier one.
                    dashed: s.dashed || (s.color.is_none() && index >= PALETTE.len()),
                    markers: s.markers,
                    band: if series.len() == first {
                        band_polygon(&s.band, fig)
                    } else {
                        vec![]
                    },
                });
            }
        }
    }
    if series.is_empty() {
        return Err(PlotError::NoData(fig.title.clone()));
    }

    let vlines: Vec<(f64, String)> = fig
        .vlines
        .iter()
        .filter_map(|(x, label)| Some((to_plot(*x, fig.x_scale)?, label.clone())))
        .collect();

    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().chain(&s.band).map(|p| p.0))
        .chain(vlines.iter().map(|v| v.0));
    let (x_lo, x_hi) = min_max(xs);
    let x = auto_axis(x_lo, x_hi, fig.x_scale);

    let y = match fig.y_range {
        None => {
            let ys = series
                .iter()
                .flat_map(|s| s.points.iter().chain(&s.band).map(|p| p.1));
            let (y_lo, y_hi) = min_max(ys);
            auto_axis(y_lo, y_hi, fig.y_scale)
        }
        Some((lo, hi)) => {
            let invalid = || PlotError::InvalidRange(fig.title.clone());
            let lo = to_plot(lo, fig.y_scale).ok_or_else(invalid)?;
            let hi = to_plot(hi, fig.y_scale).ok_or_else(invalid)?;
            if lo >= hi {
                return Err(invalid());
            }
            fixed_axis(lo, hi, fig.y_scale)
        }
    };

    Ok(Prepared {
        x,
        y,
        series,
        vlines,
    })
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Axis around data spanning `[lo, hi]` (plot space, finite, `lo <= hi`).
fn auto_axis(lo: f64, hi: f64, scale: Scale) -> Axis {
    match scale {
        Scale::Log => {
            // Whole decades around the data; a single exact decade is widened.
            let (mut a, mut b) = (lo.floor(), hi.ceil());
            if a == b {
                a -= 1.0;
                b += 1.0;
            }
            log_axis(a, b)
        }
        Scale::Linear => {
            let (mut a, mut b) = (lo, hi);
            let span = b - a;
            let scale_ref = a.abs().max(b.abs());
            if span <= scale_ref * 1e-12 || span == 0.0 {
                // Degenerate: widen by 10% of the magnitude (or ±1 around 0).
                let w = if scale_ref > 0.0 {
                    scale_ref * 0.1
                } else {
                    1.0
                };
                a -= w;
                b += w;
            }
            let pad = (b - a) * LINEAR_MARGIN;
            linear_axis(a - pad, b + pad)
        }
    }
}

/// Axis over a user-given range (plot space, `lo < hi`).
fn fixed_axis(lo: f64, hi: f64, scale: Scale) -> Axis {
    match scale {
        Scale::Log => log_axis(lo, hi),
        Scale::Linear => linear_axis(lo, hi),
    }
}

/// Log axis over `[lo, hi]` in log10 units.
fn log_axis(lo: f64, hi: f64) -> Axis {
    const EPS: f64 = 1e-9;
    let first = (lo - EPS).ceil() as i64;
    let last = (hi + EPS).floor() as i64;
    let decades: Vec<i64> = (first..=last).collect();
    let (ticks, minor) = if decades.len() >= 2 {
        // Label at most ~10 decades; the others become minor grid lines.
        let every = decades.len().div_ceil(10).max(1) as i64;
        let ticks: Vec<f64> = decades
            .iter()
            .filter(|d| d.rem_euclid(every) == 0)
            .map(|&d| d as f64)
            .collect();
        let minor: Vec<f64> = if every > 1 {
            decades
                .iter()
                .filter(|d| d.rem_euclid(every) != 0)
                .map(|&d| d as f64)
                .collect()
        } else if decades.len() <= 8 {
            sub_decade(lo, hi, &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        } else {
            Vec::new()
        };
        (ticks, minor)
    } else {
        // Less than two decades visible (only possible with a fixed range):
        // label 1-2-5 steps, everything else is a minor line.
        let ticks = sub_decade(lo, hi, &[1.0, 2.0, 5.0]);
        let minor = sub_decade(lo, hi, &[3.0, 4.0, 6.0, 7.0, 8.0, 9.0]);
        (ticks, minor)
    };
    Axis {
        log: true,
        lo,
        hi,
        ticks,
        minor,
        step: 1.0,
    }
}

/// `log10(m * 10^d)` for every mantissa `m` and decade `d` inside `[lo, hi]`.
fn sub_decade(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    for d in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in mantissas {
            let v = d as f64 + m.log10();
            if v >= lo - 1e-9 && v <= hi + 1e-9 {
                out.push(v);
            }
        }
    }
    out
}

/// Linear axis over `[lo, hi]` with "nice" 1-2-5 tick steps.
fn linear_axis(lo: f64, hi: f64) -> Axis {
    let step = nice_step((hi - lo) / 7.0);
    // `k * step` for integer k (no accumulated error); `+ 0.0` turns -0 into 0.
    let multiples = |step: f64| -> Vec<(i64, f64)> {
        let (first, last) = ((lo / step).ceil(), (hi / step).floor());
        // Guards against overflowing spans (e.g. ±1e308) or underflowing steps.
        if !(step.is_finite() && step > 0.0 && last - first <= 100.0) {
            return Vec::new();
        }
        (first as i64..=last as i64)
            .map(|k| (k, k as f64 * step + 0.0))
            .collect()
    };
    let ticks = multiples(step).into_iter().map(|(_, v)| v).collect();
    let minor = multiples(step / 2.0)
        .into_iter()
        .filter(|(k, _)| k % 2 != 0)
        .map(|(_, v)| v)
        .collect();
    Axis {
        log: false,
        lo,
        hi,
        ticks,
        minor,
        step,
    }
}

/// The smallest 1/2/5 x 10^k not below `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Label of a log-axis tick at plot-space value `v`: `10⁻³` for decades,
/// `2×10⁻³` between them.
fn log_label(v: f64) -> String {
    let d = v.round();
    if (v - d).abs() < 1e-6 {
        return format!("10{}", superscript(d as i64));
    }
    let e = v.floor();
    let m = 10f64.powf(v - e);
    format!("{}×10{}", (m * 10.0).round() / 10.0, superscript(e as i64))
}

fn superscript(n: i64) -> String {
    const DIGITS: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s = String::new();
    if n < 0 {
        s.push('⁻');
    }
    for c in n.unsigned_abs().to_string().chars() {
        s.push(DIGITS[c.to_digit(10).unwrap_or(0) as usize]);
    }
    s
}

/// Label of a linear-axis tick with a precision matching the tick `step`.
fn linear_label(v: f64, step: f64) -> String {
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    let mag = v.abs().max(step);
    if mag >= 1e6 || step < 1e-4 {
        let digits = ((v.abs().max(step).log10().floor() - step.log10().floor()).max(0.0)) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Splits the polyline `points` into the runs that lie inside `[x, y]`,
/// clipping segments at the border (Liang–Barsky).
fn clip_polyline(points: &[(f64, f64)], x: &Range<f64>, y: &Range<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for w in points.windows(2) {
        match clip_segment(w[0], w[1], x, y) {
            Some((a, b)) => {
                if current.last() != Some(&a) {
                    if current.len() >= 2 {
                        runs.push(std::mem::take(&mut current));
                    }
                    current.clear();
                    current.push(a);
                }
                current.push(b);
            }
            None => {
                if current.len() >= 2 {
                    runs.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if current.len() >= 2 {
        runs.push(current);
    }
    runs
}

fn clip_segment(
    p: (f64, f64),
    q: (f64, f64),
    x: &Range<f64>,
    y: &Range<f64>,
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (den, num) in [
        (-dx, p.0 - x.start),
        (dx, x.end - p.0),
        (-dy, p.1 - y.start),
        (dy, y.end - p.1),
    ] {
        if den == 0.0 {
            if num < 0.0 {
                return None;
            }
        } else {
            let t = num / den;
            if den < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            p
        } else if t == 1.0 {
            q
        } else {
            (p.0 + t * dx, p.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

// ---------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------

fn draw<'a, DB: DrawingBackend + 'a>(
    root: &'a DrawingArea<DB, Shift>,
    fig: &Figure,
    p: &Prepared,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;

    let mut builder = ChartBuilder::on(root);
    builder
        .margin_top(12)
        .margin_bottom(12)
        .margin_left(12)
        .margin_right(28)
        .x_label_area_size(54)
        .y_label_area_size(84);
    if !fig.title.is_empty() {
        builder.caption(&fig.title, (FONT, TITLE_SIZE).into_font());
    }
    let mut chart = builder.build_cartesian_2d(p.x.clone(), p.y.clone())?;

    let x_fmt = |v: &f64| p.x.label(*v);
    let y_fmt = |v: &f64| p.y.label(*v);
    chart
        .configure_mesh()
        .x_desc(fig.x_label.as_str())
        .y_desc(fig.y_label.as_str())
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .label_style((FONT, TICK_SIZE))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .bold_line_style(GRID_MAJOR.stroke_width(1))
        .light_line_style(GRID_MINOR.stroke_width(1))
        .axis_style(BLACK.stroke_width(1))
        .draw()?;

    let x_range = p.x.lo..p.x.hi;
    let y_range = p.y.lo..p.y.hi;
    let inside = |pt: &(f64, f64)| x_range.contains(&pt.0) && y_range.contains(&pt.1);
    let mut any_label = false;

    for s in p.series.iter().filter(|s| !s.band.is_empty()) {
        let color = PALETTE[s.index % PALETTE.len()];
        chart.draw_series(std::iter::once(Polygon::new(
            s.band.clone(),
            color.mix(BAND_ALPHA).filled(),
        )))?;
    }
    for s in &p.series {
        let color = PALETTE[s.index % PALETTE.len()];
        let line = color.stroke_width(LINE_WIDTH);
        let runs = clip_polyline(&s.points, &x_range, &y_range);
        let mut first = true;
        let mut annotate = |anno: &mut SeriesAnno<'a, DB>| {
            if s.name.is_empty() {
                return;
            }
            any_label = true;
            let (dashed, markers) = (s.dashed, s.markers || s.points.len() == 1);
            set_legend(anno.label(s.name.as_str()), line, dashed, markers);
        };
        for run in runs {
            let anno = if s.dashed {
                chart.draw_series(DashedLineSeries::new(run, 8, 5, line))?
            } else {
                chart.draw_series(LineSeries::new(run, line))?
            };
            if std::mem::take(&mut first) {
                annotate(anno);
            }
        }
        if s.markers || s.points.len() == 1 {
            let anno = chart.draw_series(
                s.points
                    .iter()
                    .filter(|pt| inside(pt))
                    .map(|&pt| Circle::new(pt, MARKER_RADIUS, color.filled())),
            )?;
            if std::mem::take(&mut first) {
                annotate(anno);
            }
        }
        if first {
            // Entirely outside a fixed y range: keep the legend entry.
            let anno = chart.draw_series(std::iter::empty::<Circle<(f64, f64), u32>>())?;
            annotate(anno);
        }
    }

    let vline = VLINE_COLOR.stroke_width(LINE_WIDTH);
    for (x, label) in &p.vlines {
        let anno = chart.draw_series(DashedLineSeries::new(
            [(*x, p.y.lo), (*x, p.y.hi)],
            6,
            6,
            vline,
        ))?;
        if !label.is_empty() {
            any_label = true;
            set_legend(anno.label(label.as_str()), vline, true, false);
        }
    }

    if any_label {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .legend_area_size(40)
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(160, 160, 160).stroke_width(1))
            .label_font((FONT, LEGEND_SIZE))
            .draw()?;
    }
    Ok(())
}

/// Sets the legend sample of a series: a 30px line (solid or dashed), with
/// a circle in the middle when the series has markers.
fn set_legend<'a, DB: DrawingBackend + 'a>(
    anno: &mut SeriesAnno<'a, DB>,
    style: ShapeStyle,
    dashed: bool,
    marker: bool,
) {
    let solid = move || PathElement::new(vec![(0, 0), (30, 0)], style);
    let dash = move |a: i32, b: i32| PathElement::new(vec![(a, 0), (b, 0)], style);
    let dot = move || Circle::new((15, 0), MARKER_RADIUS + 1, style.color.filled());
    match (dashed, marker) {
        (false, false) => anno.legend(move |at| EmptyElement::at(at) + solid()),
        (false, true) => anno.legend(move |at| EmptyElement::at(at) + solid() + dot()),
        (true, false) => {
            anno.legend(move |at| EmptyElement::at(at) + dash(0, 8) + dash(11, 19) + dash(22, 30))
        }
        (true, true) => anno.legend(move |at| {
            EmptyElement::at(at) + dash(0, 8) + dash(11, 19) + dash(22, 30) + dot()
        }),
    };
}

#[cfg(test)]
mod tests;

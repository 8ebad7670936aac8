//! # samlab-report
//!
//! Turns samlab's results into what a researcher looks at: [`plot::render`] draws line charts (SVG + PNG, fonts
//! embedded), and [`report::Report`] writes `report.html` (figures inline), `REPORT.md` and `claims.json` with the
//! table of the paper's claims and our verdicts.
#![deny(missing_docs)]

pub mod plot;
pub mod report;

pub use plot::{render, Figure, PlotError, Scale, Series};
pub use report::{Claim, Report, Section, Verdict};

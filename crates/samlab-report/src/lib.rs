//! samlab-report

pub mod plot;

pub use plot::{render, Figure, PlotError, Scale, Series};

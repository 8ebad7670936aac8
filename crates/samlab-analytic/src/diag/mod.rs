//! Diagonal linear networks $\beta = u \odot v$: the engine ([`train`] with any member of the SAM family, in f64),
//! their exact curvature ([`curvature`]) and a run as data ([`run`](mod@run): config, execution into a run directory,
//! loading back).

pub mod curvature;
mod net;
pub mod run;

pub use net::*;

//! samlab-report

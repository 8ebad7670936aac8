//! samlab-core

//! Files on disk: the one symlink-safe atomic writer ([`atomic`]) and bounded, careful
//! reading ([`read`]). Every file certctl or certd writes goes through [`atomic`].
//!
//! May import: nothing of the crate (the bottom layer).

pub(crate) mod atomic;
pub(crate) mod read;

pub(crate) use read::io_cause;

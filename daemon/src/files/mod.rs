//! Files on disk: the one symlink-safe atomic writer ([`atomic`]) and bounded, careful
//! reading ([`read`]). Every file certctl or certd writes goes through [`atomic`].

pub mod atomic;
pub mod read;

pub use read::io_cause;

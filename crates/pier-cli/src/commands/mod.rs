//! One module per subcommand, as in spin's CLI.

pub mod deploy;
pub mod logs;
pub mod manifests;
pub mod revisions;
pub mod services;

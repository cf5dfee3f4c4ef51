//! One module per subcommand, as in spin's CLI.

pub mod api_gateway;
pub mod auth;
pub mod config;
pub mod deploy;
pub mod domains;
pub mod hosting;
pub mod iam;
pub mod images;
pub mod logs;
pub mod manifests;
pub mod revisions;
pub mod services;

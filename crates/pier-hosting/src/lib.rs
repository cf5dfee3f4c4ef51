//! Static hosting compatible with Firebase Hosting's `firebase.json`: a site's versions are sets of
//! content-addressed files plus the rules of its `hosting` entry, and a released version is served by the
//! gateway as a filter and a responder on the site's route.
//!
//! - [`config`] reads a `hosting` entry into [`Rules`] (redirects, rewrites, headers, `cleanUrls`,
//!   `trailingSlash`, `i18n`), refusing what cannot run here with the JSON pointer of the rule;
//!   [`pattern`] compiles `source` globs and `regex` rules.
//! - [`files`] is the content-addressed store (SHA-256) with gzip and brotli variants made at deploy.
//! - [`site`] is the pure decision of what answers a request, in Firebase's order.
//! - [`respond`] answers with a file as a static web server does (conditional requests, ranges,
//!   encodings); [`stage`] puts it all on the gateway's route, rewrites to services included.
//!
//! Nothing here touches the store: the control plane gives each route its version, the file store, the
//! services' hosts and the site's tokens.

pub mod config;
pub mod files;
pub mod pattern;
pub mod respond;
pub mod site;
pub mod stage;

pub use config::{ConfigFault, Rules, compile};
pub use files::{FileStore, Stored};
pub use site::{Entry, SiteVersion};
pub use stage::{RunTarget, SiteStage, SiteTokens};

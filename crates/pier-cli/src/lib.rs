//! The pier command line: gcloud-like verbs over the admin API; the only crate that prints to stdout.

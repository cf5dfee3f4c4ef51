//! Pure scaling decisions: desired instance counts from observed concurrency.

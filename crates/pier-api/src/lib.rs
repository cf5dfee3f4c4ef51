//! The admin REST API (axum) with its OpenAPI document.

//! The control plane: deploys, traffic, recovery at start, and the route snapshots the gateway serves.

//! Per-revision instance pools: request slots, the cold-start queue and the scaling loop.

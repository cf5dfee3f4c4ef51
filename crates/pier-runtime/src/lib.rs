//! Runs revision instances: the runtime trait, the host-process runtime and instance log capture.

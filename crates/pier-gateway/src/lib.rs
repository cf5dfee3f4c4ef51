//! The data plane: TLS termination, host routing and the streaming reverse proxy.

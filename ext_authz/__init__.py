"""The Envoy front door: gRPC services (ext_authz Check, ext_proc Process) translating Envoy messages to core calls."""

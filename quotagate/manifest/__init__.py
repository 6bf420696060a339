"""The manifest: the declarative configuration of organizations, keys, quotas, rate card and upstreams."""

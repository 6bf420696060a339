"""Envoy's configuration for a Quotagate deployment, rendered from the configuration snapshot."""

from ext_authz.envoy_config.manifest_view import snapshot_from_manifest
from ext_authz.envoy_config.options import RenderOptions
from ext_authz.envoy_config.render import render_envoy_config, to_yaml

__all__ = ["RenderOptions", "render_envoy_config", "snapshot_from_manifest", "to_yaml"]

"""The script mitmproxy loads: `mitmdump -s addons/quotagate_addon.py` (see addons/README.md).

    mitmdump -s addons/quotagate_addon.py --set connection_strategy=lazy \\
        --mode reverse:https://api.openai.com@8080 --set quotagate_manifest=quotagate.yaml

The addon lives in an importable module: mitmproxy runs scripts outside sys.modules, where dataclasses
and reloads misbehave.
"""

import logging

# mitmproxy shows every logger's INFO lines; alembic's plugin and migration steps are noise there.
logging.getLogger("alembic").setLevel(logging.WARNING)

from addons.quotagate_gateway import QuotagateAddon  # noqa: E402

addons = [QuotagateAddon()]

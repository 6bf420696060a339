"""mitmproxy front door: `mitmdump -s addons/quotagate_addon.py` runs the Quotagate core in-process."""

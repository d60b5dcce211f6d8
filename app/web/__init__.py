"""The web layer: JSON API, Server-Sent Events and (later) HTML pages over one query layer."""

"""The hub: MQTT ingest -> reflectors -> SQL store, cluster registry, change feed."""

"""The informer: list/watch semantics, free of MQTT, SQL and Redis.

Data flows agent source -> (transport) -> reflector -> handler (the store).
"""

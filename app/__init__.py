"""Transport Informer: Kubernetes list/watch carried over MQTT to a SQL-backed hub."""

__version__ = "0.1.0"

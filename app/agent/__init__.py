"""The agent: lists and watches one cluster and publishes the changes to the hub."""

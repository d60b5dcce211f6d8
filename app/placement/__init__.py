"""Workload placement: the hub's desired state, which clusters get it, and its delivery."""

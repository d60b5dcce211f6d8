"""Cluster identity's certificates: a CA, the broker's and the hub's certificates, cluster
certificates signed from requests (CSRs), the revocation list (CRL), and join tokens.

Pure: keys, certificates and CRLs in memory and as PEM files; nothing of MQTT, SQL or HTTP.
"""

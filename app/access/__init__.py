"""Who may do what: roles, principals, cluster scopes and workload admission, free of I/O.

The web layer authenticates a request into a `Principal`; the store keeps tokens, sessions
and the audit log; everything here is pure so it is testable alone.
"""

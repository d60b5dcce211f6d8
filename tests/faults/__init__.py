"""Fault injection: reproducible faults against real processes, judged against ground truth.

One concern per module:

    churn        seeded creates/modifies/deletes on a fake API server, counts kept near targets
    processes    hub and agent processes started here, tracked by PID; RSS and fds from /proc
    tcp_proxy    an asyncio TCP proxy that forwards, stalls, drops and resumes
    brokers      mosquitto restarted with, without, or with stale persistence
    postgres     private databases; backends terminated, a table locked
    redis        a private redis-server
    sqlite_files database files made unwritable (chattr +i)
    replay       duplicated and reordered agent messages, re-published on their topic
    tap          a listener on an agent's topic, to time a fault to the protocol
    oracle       the hub's objects against the truth: lost, stale-older/-newer, phantom
    sse_check    one unfiltered /stream held across the faults: gaps, duplicates, resets
    probe        /readyz, a REST read and /metrics sampled while a fault lasts
    testbed      broker, hub, fake API servers with churn, agents: one row's world
    scenarios    the matrix: one row per fault and database
    runner       runs a row: sync, churn, fault, heal, converge; the row's result

`bench/faults.py` runs the whole matrix; `test_matrix.py` a seeded subset (docs/faults.md).
"""

"""One realtime call, split the way h11 splits HTTP.

protocol.py (bytes <-> typed events) and turn.py (push-to-talk / hands-free /
barge-in as a transition table) are pure: no I/O, no clock of their own. engine.py
is the only I/O driver; connection.py is one connection attempt; liveness.py watches
the transport; state.py is the call's life; events.py is what observers hear.
"""

"""What the client (core/, gui/) and the local server (server/) both stand on.

PCM framing, the paced 20 ms track, the loopback-ICE patch, the adaptive jitter
buffer hook, logs, paths and errors. Imports neither core, server nor gui.
"""

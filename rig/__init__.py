"""The test rig: real parts set up for tests and benchmarks alike.

A private PulseAudio with virtual devices, the local server as a process, a hostile
and a scripted fake provider, a loopback WebRTC client, test speech. Tests and
`bench/` both import it, so a figure and a test exercise the same set-up. Never
shipped in the bundle.
"""

"""The test aiortc client: the server package's loopback client (the self-test uses it too)."""

from server.realtime.client import PUSH_TO_TALK, RealtimeClient, ReceivedAudio, ephemeral_key

__all__ = ["PUSH_TO_TALK", "RealtimeClient", "ReceivedAudio", "ephemeral_key"]

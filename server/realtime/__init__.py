"""The local realtime server: OpenAI's Realtime API over WebRTC, offline, on this machine."""

"""Local realtime server and metrics receiver. Never imports gui/."""

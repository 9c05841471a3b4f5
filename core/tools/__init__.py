"""Function tools the assistant can call: the registry, the built-ins, the wire events and MCP servers."""

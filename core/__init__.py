"""Sandra Desktop: everything that is not a widget. Pure asyncio; never imports Qt."""

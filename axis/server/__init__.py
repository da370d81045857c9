"""The HTTP server (aiohttp): the only layer that imports it."""

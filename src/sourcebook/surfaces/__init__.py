"""The ways in: the command line, the HTTP server with its web UI, and the MCP server."""

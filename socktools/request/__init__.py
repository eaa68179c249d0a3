"""request: one framed exchange with a server."""

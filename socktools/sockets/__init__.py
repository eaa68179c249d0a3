"""``socktools sockets``: the socket table one-shot or live (config, view, report, run)."""

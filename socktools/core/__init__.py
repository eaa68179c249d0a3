"""The shared core under every command: the I/O loop, signals, worker processes."""

"""stall: reproduce BlockingIOError against a peer that does not read."""

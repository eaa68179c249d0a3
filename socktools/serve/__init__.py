"""serve: the echo, framed and sink servers and their supervised workers."""

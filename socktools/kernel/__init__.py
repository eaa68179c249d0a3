"""Readers of the kernel's view: TCP_INFO, the socket table, sysctl limits, doctor."""

"""ping: TCP-connect (and ICMP) probes."""

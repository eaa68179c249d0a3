"""`socktools proxy`: a TCP proxy that breaks the link on purpose (Toxiproxy's toxics and API)."""

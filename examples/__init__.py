"""Worked examples: importable from the project root (``--protocol examples.memcached_plugin:Memcached``)."""

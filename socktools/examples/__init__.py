"""Worked examples shipped with the package, so ``--help``'s examples work from any directory
and after a wheel install (``--protocol socktools.examples.memcached:Memcached``).
``postgres`` and ``smtp`` also hold an opening conversation (a login, a greeting) on every
connection.  Copy one as the start of your own plug-in (docs/plugins.md)."""

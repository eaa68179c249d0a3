"""Exchange protocols, sans-I/O: what flood, request and sniff say and hear on a connection.

See :mod:`socktools.wire.base` for the interface, :mod:`socktools.wire.spec`
for options -> protocol.  Nothing here opens a socket, reads a clock or prints.
"""

from socktools.wire.base import Failure, Parser, Reply, WireError, WireProtocol
from socktools.wire.spec import MODES, WireOptionError, WireSpec, build, load_plugin

__all__ = ["Failure", "Parser", "Reply", "WireError", "WireProtocol", "MODES", "WireOptionError",
           "WireSpec", "build", "load_plugin"]

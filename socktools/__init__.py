"""socktools: serve, load, break and watch TCP sockets on your own machine."""

__version__ = "0.1.0"

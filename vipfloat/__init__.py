"""vipfloat: keep a virtual IP on whichever host Redis Sentinel has made master."""

__version__ = "0.1.0"

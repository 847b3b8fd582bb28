"""`vipfloat doctor`: check a running setup against the traps that make a VIP
failover fail on the day it is needed.

Split like the rest of vipfloat: ``gather`` reads the world (Sentinels, Redis,
this host) into frozen ``facts``; ``checks`` are pure functions from facts to
findings; ``render`` prints them. Nothing here changes anything.
"""

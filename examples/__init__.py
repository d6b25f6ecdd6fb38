"""Example applications built on eventsource (not part of the installed package)."""

"""The wiring: it reads the configuration, builds the domain's core and the port, sets up
every channel from one visible registry, runs the outbox dispatcher and the scheduler,
and offers the ``feedback-intake`` command. It may import everything; nothing imports it.
"""

"""Incidents: many citizens' reports of one event grouped into one case.

``places`` reads where a complaint is, ``match`` scores two complaints as the same event,
``config`` holds the ``[incidents]`` section, ``candidates`` finds and decides at intake,
and ``grouping`` creates, joins, merges and splits incidents in the store.
"""

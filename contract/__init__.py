"""The contract between the domain (``bot/``) and the channels (``channels/``).

Below both, importing nothing of ours but the storage-free standard library: what a
channel hands in (``Inbound``), what the outbox hands a channel to send (``Outgoing``),
the ``Sender`` protocol and its delivery errors, the results and errors of the port a
channel is given, and the building blocks every section of the configuration uses.

    messages.py   Inbound, Outgoing, Attachment, Location; Outgoing's stored form
    delivery.py   Sender, TransientDeliveryError, PermanentDeliveryError
    results.py    what the port answers (IntakeResult, PublicStatus, Lookup, Officer, Case)
                  and the errors it raises (IntakeError, NotAllowed, ActionError, ...)
    schema.py     configuration building blocks: a strict section, slugs, variable names,
                  URLs, several problems at once; reading a secret from the environment
"""

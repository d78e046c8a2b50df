"""Kind-agnostic controller machinery: when to reconcile (``triggers``: parent/child triggers, per-object
serialization, coalescing, retries), the periodic ``resync`` loop, ``peering`` (is this replica a standby),
kopf's ``settings``, ``publishing`` of statuses and ``transitions`` (what becomes an Event), and the
``versions`` each kind knows of its objects.

Knows none of the mlops.dev kinds: the runner builds these objects once per kind and hands each the kind's
reconcile. Importing it has no side effect.
"""

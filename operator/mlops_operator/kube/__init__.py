"""Talking to Kubernetes: the apiserver connection (``connection``), the typed client (``client``: server-side
apply, get/list/patch/create/delete, Events), API discovery (``discovery``) and what the operator must know
about its kubeconfig before kopf is imported (``kubeconfig``).

This package knows none of the mlops.dev kinds: the paths of the kinds it may touch, the field manager and the
annotation prefix are handed to its objects by the runner. Importing it has no side effect (and imports
nothing: ``cli.py`` reads ``kubeconfig`` before kopf is loaded).
"""

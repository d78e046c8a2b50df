"""Drift statistics (numpy), reference profiles and drift decisions. Shared by the runtime and controllers."""

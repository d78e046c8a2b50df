"""The mlops.dev API: versioned pydantic models that are the single source of the CRD schemas."""

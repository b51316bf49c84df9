"""The REST control plane (FastAPI). Built in the service issue; never steps an env."""

"""The model's lifecycle while it serves: adapter hot swap (adapter_watch.py), the shadow adapter (shadow.py),
and which of them a pipeline runs (parts.py)."""

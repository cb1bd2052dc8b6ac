"""The record flow: intake -> batch queue -> inference -> outbox -> committer, and what they pass along.

model_calls.py (the one thread that owns the model), messages.py (what the outbox publishes for an input),
work.py (one record's journey), offsets.py (the acknowledged prefix per partition), records.py (dead-letter
reasons and headers, trace headers, enriched output); the policies the flow applies: publish_policy.py (a
refused publish), review.py (review routing), breaker.py (a model that fails everything), transaction_gate.py
(exactly-once: what a transaction may take).
"""

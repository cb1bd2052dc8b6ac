"""The record flow: intake -> batch queue -> inference -> outbox -> committer, and what they pass along.

model_calls.py (the one thread that owns the model), work.py (one record's journey), offsets.py (the
acknowledged prefix per partition), records.py (dead-letter reasons and headers); the policies the flow
applies: publish_policy.py (a refused publish), review.py (review routing), breaker.py (a model that
fails everything).
"""

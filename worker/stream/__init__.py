"""The stream: the pipeline (pipeline.py wires it, watcher.py watches the broker beside it) in three rooms.

- kafka/: the Kafka edge (clients, options, errors, partitioner, records read raw);
- flow/: the record flow (intake -> batch queue -> inference -> outbox -> committer) and its policies;
- lifecycle/: the model's lifecycle while it serves (adapter hot swap, shadow adapter).

Nothing here imports torch, transformers, peft or bitsandbytes: the classifier arrives as a
`worker.protocol.NotificationClassifier`.
"""

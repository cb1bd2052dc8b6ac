"""The stream: the pipeline's parts (intake, inference, outbox, committer, watcher), its queue, offsets and Kafka I/O.

Nothing here imports torch, transformers, peft or bitsandbytes: the classifier arrives as a
`worker.protocol.NotificationClassifier`.
"""

"""The Kafka edge: the aiokafka clients, their options and errors, the partitioner, and records read raw.

Only this room imports aiokafka's clients and error types for the stream; the rest of the stream sees
KafkaClients and the exceptions of errors.py. undecodable.py, raw_fetch.py and raw_records.py read a
partition byte by byte when the client cannot decode what it fetched.
"""

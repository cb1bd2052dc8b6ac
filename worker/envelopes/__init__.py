"""Notification envelopes: how a record's bytes become a Notification, whatever shape the producer sent.

framing.py reads the frame around a payload (the schema-registry wire format; bytes that are not text);
shapes.py knows each notification envelope (CloudEvents, Firebase Cloud Messaging, Apple Push, Android's
notification listener, Web Push, the worker's own flat JSON) and detects which one an object is, in one
place; mapping.py reads a user's own shape through JSON Pointers (NOTIF_INPUT_FIELDS); read.py puts them
together: bytes and headers in, a Notification (or a typed rejection) and the envelope's name out.
Nothing here knows Kafka or the model; the contract (worker/contract.py) validates what comes out.
"""

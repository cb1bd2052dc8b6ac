"""Which model-lifecycle parts a pipeline runs: the adapter watcher and the shadow, from the settings.

Kept apart from the supervisor so that it only wires parts; a classifier that cannot swap adapters or
hold a shadow (e.g. the instant classifier) runs without them, and says so once.
"""

from __future__ import annotations

import structlog

from worker.observe.metrics import Metrics
from worker.protocol import NotificationClassifier, ShadowClassifier, SwappableClassifier
from worker.settings import Settings
from worker.stream.flow.model_calls import InferenceThread
from worker.stream.flow.records import header_names
from worker.stream.kafka.clients import KafkaClients
from worker.stream.lifecycle.adapter_watch import AdapterWatcher
from worker.stream.lifecycle.shadow import Shadow

log = structlog.get_logger("worker.lifecycle")


def adapter_watcher(settings: Settings, thread: InferenceThread, classifier: NotificationClassifier,
                    metrics: Metrics) -> AdapterWatcher | None:
    """A watcher of NOTIF_ADAPTER whenever one is served (SIGHUP works even with NOTIF_ADAPTER_POLL_S=0)."""
    if not settings.adapter:
        return None
    if not isinstance(classifier, SwappableClassifier):
        log.warning("adapter_swap_unavailable", classifier=classifier.name)
        return None

    def show(path: str, adapter_id: str) -> None:
        metrics.show_model(name=f"{settings.model}+{path}", adapter=path, adapter_id=adapter_id)

    return AdapterWatcher(settings.adapter, settings.adapter_poll_s, thread, classifier, metrics, show)


def shadow(settings: Settings, thread: InferenceThread, classifier: NotificationClassifier, kafka: KafkaClients,
           metrics: Metrics) -> Shadow | None:
    """The shadow scorer when NOTIF_SHADOW_TOPIC is set and the classifier holds a shadow adapter."""
    if not settings.shadow_topic:
        return None
    if not isinstance(classifier, ShadowClassifier):
        log.warning("shadow_unavailable", classifier=classifier.name)
        return None
    return Shadow(settings.shadow_topic, thread, classifier, kafka, metrics, header_names(settings.propagate_headers))

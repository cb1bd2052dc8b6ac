#!/bin/sh
# Create the worker's three topics on the compose Redpanda; safe to run again (existing topics are kept).
set -eu

: "${BROKERS:?}" "${NOTIF_INPUT_TOPIC:?}" "${NOTIF_OUTPUT_TOPIC:?}" "${NOTIF_DLQ_TOPIC:?}"
: "${INPUT_PARTITIONS:?}" "${OUTPUT_PARTITIONS:?}" "${DLQ_PARTITIONS:?}"

create() {
  topic=$1
  partitions=$2
  if rpk topic list -X brokers="$BROKERS" | awk 'NR > 1 { print $1 }' | grep -qxF "$topic"; then
    echo "topic $topic exists"
  else
    rpk topic create "$topic" -X brokers="$BROKERS" --partitions "$partitions" --replicas 1
  fi
}

create "$NOTIF_INPUT_TOPIC" "$INPUT_PARTITIONS"
create "$NOTIF_OUTPUT_TOPIC" "$OUTPUT_PARTITIONS"
create "$NOTIF_DLQ_TOPIC" "$DLQ_PARTITIONS"
rpk topic list -X brokers="$BROKERS"

#!/usr/bin/env bash
# Blue-green for the answers chart (docs/deployment.md, "Blue-green"): two releases, one per
# slot (answers-blue, answers-green); the Service `answers` selects the live slot's API pods.
#
#   blue-green.sh status                  which slot is live, and the previous one
#   blue-green.sh switch green            after green's API is fully rolled out, points the
#                                         Service at it (the previous slot is remembered)
#   blue-green.sh rollback                points the Service back at the previous slot
#
# Options (before the command): -n NAMESPACE, -s SERVICE (default answers), --local FILE to
# work on a rendered Service manifest offline (prints the result; what the CI test does).
set -euo pipefail

namespace=()
service=answers
local_file=""
while [ $# -gt 0 ]; do
  case $1 in
    -n) namespace=(-n "$2"); shift 2 ;;
    -s) service=$2; shift 2 ;;
    --local) local_file=$2; shift 2 ;;
    *) break ;;
  esac
done
command=${1:-status}

slot_key='answers\.example\.com/slot'
live_annotation='answers\.example\.com/live-slot'
previous_annotation='answers\.example\.com/previous-slot'

read_field() { # jsonpath
  if [ -n "$local_file" ]; then
    # An empty patch applied offline: kubectl's way of reading a manifest's field.
    kubectl patch --local -f "$local_file" --type merge -p '{}' -o "jsonpath=$1"
  else
    kubectl get service "$service" "${namespace[@]}" -o "jsonpath=$1"
  fi
}

live() { read_field "{.spec.selector.$slot_key}"; }
previous() { read_field "{.metadata.annotations.$previous_annotation}"; }

switch_to() {
  local target=$1 current
  case $target in blue | green) ;; *) echo "slot must be blue or green, not '$target'" >&2; exit 2 ;; esac
  current=$(live)
  if [ "$current" = "$target" ]; then
    echo "$target is already live" >&2
    [ -n "$local_file" ] && cat "$local_file"
    return 0
  fi
  if [ -z "$local_file" ]; then
    # Only a slot whose every API pod is ready takes traffic.
    kubectl rollout status "deployment/answers-$target-api" "${namespace[@]}" --timeout=300s
  fi
  local patch
  patch=$(printf '{"metadata":{"annotations":{"answers.example.com/live-slot":"%s","answers.example.com/previous-slot":"%s"}},"spec":{"selector":{"answers.example.com/slot":"%s"}}}' \
    "$target" "$current" "$target")
  if [ -n "$local_file" ]; then
    kubectl patch --local -f "$local_file" --type merge -p "$patch" -o yaml
  else
    kubectl patch service "$service" "${namespace[@]}" --type merge -p "$patch"
    echo "live: $target (was $current); roll back with: $0 rollback" >&2
  fi
}

case $command in
  status) echo "live: $(live), previous: $(previous)" ;;
  switch) switch_to "${2:?which slot: blue or green}" ;;
  rollback)
    target=$(previous)
    [ -n "$target" ] || { echo "no previous slot recorded on the Service" >&2; exit 1; }
    switch_to "$target"
    ;;
  *) echo "usage: $0 [-n NS] [-s SERVICE] [--local FILE] status|switch SLOT|rollback" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Validates the alerting artefacts in deploy/ with the real tools (docs/observability.md):
# promtool checks and unit-tests the recording and alert rules, amtool checks the Alertmanager
# configuration and where each kind of alert is routed, and every alert's runbook exists.
# Installs promtool and amtool from Debian's packages when missing (without starting servers).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[observability] %s\n' "$*" >&2; }

if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  log "installing promtool and amtool (Debian: prometheus, prometheus-alertmanager)"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' scripts would start a Prometheus and an Alertmanager: refuse service starts.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

rules=(deploy/prometheus/recording-rules.yml deploy/prometheus/alerts.yml)
log "promtool check rules"
promtool check rules "${rules[@]}"
log "promtool test rules"
promtool test rules deploy/prometheus/tests/*.test.yml

config=deploy/alertmanager/alertmanager.yml
log "amtool check-config"
amtool check-config "$config"
route() { # labels... expected-receivers
  local expected=${*: -1}
  local labels=("${@:1:$#-1}")
  amtool config routes test --config.file="$config" --verify.receivers="$expected" "${labels[@]}" \
    >/dev/null 2>&1 || {
    log "alerts labelled ${labels[*]} should reach $expected; they reach: $(amtool config routes test --config.file="$config" "${labels[@]}" 2>/dev/null)"
    exit 1
  }
}
route severity=page sli=latency pagerduty,slack-pages
route severity=ticket sli=latency slack-tickets
route alertname=Unlabelled slack-tickets
log "routes: pages to PagerDuty (and the on-call channel), tickets to Slack"

log "every alert has a runbook that exists"
missing=0
while read -r url; do
  if [ ! -f "$url" ]; then
    log "runbook_url $url does not exist"
    missing=1
  fi
done < <(grep -ho 'runbook_url: *[^ ]*' deploy/prometheus/alerts.yml | awk '{print $2}' | sort -u)
alerts=$(grep -c '^ *- alert:' deploy/prometheus/alerts.yml)
with_runbook=$(grep -c 'runbook_url:' deploy/prometheus/alerts.yml)
if [ "$alerts" != "$with_runbook" ]; then
  log "$alerts alerts but $with_runbook runbook_url annotations"
  missing=1
fi
exit $missing

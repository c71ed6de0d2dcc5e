#!/usr/bin/env python3
"""What deploy/compose.yaml must hold, on `docker-compose config` output (stdin; the file as
docker-compose understood it): every part of the platform, two API replicas and two relays, the
answers processes non-root on a read-only root filesystem with a health check, migrations before
the processes; and in the file itself (argument), no secret (config inlines the env_file)."""
import re
import sys

import yaml

config = yaml.safe_load(sys.stdin)
services = config["services"]
written = yaml.safe_load(open(sys.argv[1]))["services"]
failures = []
wanted = {"api", "relay", "projector", "migrate", "postgres", "kafka", "redis", "otel-collector",
          "prometheus", "alertmanager", "grafana", "lb"}
if set(services) != wanted:
    failures.append(f"services {sorted(services)}, expected {sorted(wanted)}")
for name in ("api", "relay"):
    if services.get(name, {}).get("deploy", {}).get("replicas") != 2:
        failures.append(f"{name}: not 2 replicas")
if "KAFKA_PROCESS_ROLES" not in services.get("kafka", {}).get("environment", {}):
    failures.append("kafka: not in KRaft mode")
for name in ("api", "relay", "projector", "migrate"):
    s = services.get(name, {})
    if not s.get("read_only") or str(s.get("user", "0")).split(":")[0] in ("0", "root"):
        failures.append(f"{name}: not read-only and non-root")
    if name != "migrate":
        if "probe" not in " ".join(s.get("healthcheck", {}).get("test", [])):
            failures.append(f"{name}: no health check")
        if s.get("depends_on", {}).get("migrate", {}).get("condition") != "service_completed_successfully":
            failures.append(f"{name}: does not wait for the migration")
    for key in written.get(name, {}).get("environment") or {}:
        if re.search(r"KEY|PASSWORD|TOKEN|SECRET|DATABASE__URL", key):
            failures.append(f"{name}: {key} written in the compose file (secrets come from the env_file)")
if failures:
    print("compose violations:", *failures, sep="\n  ")
    sys.exit(1)
print(f"compose: {len(services)} services as required")

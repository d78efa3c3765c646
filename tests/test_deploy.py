"""The deployment files: Kubernetes manifests valid against the API schemas (offline), probes on the launcher's
real health endpoints, and the Dockerfile on the NGC image with the same Triton as our pip binary."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kubernetes" / "cosmos-triton.yaml"


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_manifests_are_valid_kubernetes(version):
    import kubernetes_validate

    for document in yaml.safe_load_all(MANIFEST.read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_probes_use_the_launchers_health_endpoints_and_ports_match_the_cli():
    from cosmos_triton.server.cli import build_parser

    deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = build_parser().parse_args([])
    assert ports == {"http": defaults.http_port, "grpc": defaults.grpc_port, "metrics": defaults.metrics_port,
                     "health": defaults.health_port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    args = build_parser().parse_args(container["args"])  # the launcher accepts every argument given
    assert args.address == "0.0.0.0" and deployment["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"] > args.drain_timeout


def test_dockerfile_uses_the_triton_of_our_pip_binary_and_the_launcher():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in text  # 24.10 = Triton 2.51 = nvidia-pytriton 0.7.0
    assert "cosmos-serve" in text and "--address" in text

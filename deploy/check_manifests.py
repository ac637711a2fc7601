#!/usr/bin/env python3
"""Project rules the schema validators cannot know, checked on rendered manifests.

    check_manifests.py k8s NAME < rendered.yaml    (output of `kubectl kustomize`)
    check_manifests.py dockerfile Dockerfile cargo-metadata.json

Run by scripts/validate-deploy.sh; exits 1 listing every violation. Needs PyYAML.
"""

import json
import re
import sys

import yaml

# The device's dependency on the policy service: an alert, never a probe (a policy outage
# must not empty the device Service or restart its pods).
POLICY_DEPENDENCY_HEALTH = "enroll.device.v1.DeviceService/policy"


def pod_specs(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "Job"):
        yield doc["spec"]["template"]["spec"]


def check_security(where, spec, problems):
    pod = spec.get("securityContext") or {}
    if pod.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken must be false")
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        name = f"{where} container {container['name']}"
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities.drop must contain ALL")
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        if not {"cpu", "memory"} <= requests.keys():
            problems.append(f"{name}: requests need cpu and memory")
        if "memory" not in (resources.get("limits") or {}):
            problems.append(f"{name}: a memory limit is required")


def probe_service(probe):
    """The gRPC health name a probe asks for, or None for a non-gRPC probe."""
    grpc = probe.get("grpc")
    return None if grpc is None else grpc.get("service", "")


def check_probes(where, container, problems):
    probes = {kind: container.get(kind) for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        if probe is None:
            problems.append(f"{where}: {kind} is missing")
        elif probe_service(probe) == POLICY_DEPENDENCY_HEALTH:
            problems.append(f"{where}: {kind} must not follow the policy dependency")
    liveness = probes["livenessProbe"] or {}
    readiness = probes["readinessProbe"] or {}
    # The service's own name follows the database (policy set staleness); the overall
    # status "" does not once started. Liveness on a database-dependent name would restart
    # every replica during a database outage.
    if probe_service(liveness) not in (None, ""):
        problems.append(f"{where}: livenessProbe must check the overall status \"\"")
    if probe_service(readiness) in (None, ""):
        problems.append(f"{where}: readinessProbe must check the service's own health name")


def check_k8s(name, docs):
    problems = []
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        for spec in pod_specs(doc):
            check_security(where, spec, problems)
    scaled = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in by_kind.get("HorizontalPodAutoscaler", [])}
    budgeted = [pdb["spec"]["selector"]["matchLabels"] for pdb in by_kind.get("PodDisruptionBudget", [])]
    for deployment in by_kind.get("Deployment", []):
        deployment_name = deployment["metadata"]["name"]
        where = f"{name}: Deployment/{deployment_name}"
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            check_probes(f"{where} container {container['name']}", container, problems)
        if deployment_name not in scaled:
            problems.append(f"{where}: no HorizontalPodAutoscaler targets it")
        elif "replicas" in deployment["spec"]:
            problems.append(f"{where}: drop spec.replicas, the HPA owns it")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not any(selector.items() <= labels.items() for selector in budgeted):
            problems.append(f"{where}: no PodDisruptionBudget selects its pods")
    if not any(
        policy["spec"].get("podSelector") == {} and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
        and set(policy["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        for policy in by_kind.get("NetworkPolicy", [])
    ):
        problems.append(f"{name}: a default-deny NetworkPolicy is required")
    return problems


def check_dockerfile(dockerfile_path, metadata_path):
    """The image builds what the workspace has: every `-p` is a workspace package, every
    built binary is copied, every member's directory is in the build context, and the
    builder's Rust is at least the workspace's rust-version."""
    problems = []
    text = open(dockerfile_path, encoding="utf-8").read()
    metadata = json.load(open(metadata_path, encoding="utf-8"))
    root = metadata["workspace_root"].rstrip("/") + "/"
    members = {package["id"]: package for package in metadata["packages"]}
    workspace = [members[member] for member in metadata["workspace_members"]]
    names = {package["name"] for package in workspace}
    build = re.search(r"cargo build ([^\n\\&]*)", text)
    built = re.findall(r"-p ([\w-]+)", build.group(1)) if build else []
    if not built:
        problems.append(f"{dockerfile_path}: no `cargo build ... -p NAME` line")
    for package in built:
        if package not in names:
            problems.append(f"{dockerfile_path}: builds -p {package}, not a workspace package")
        if f"target/release/{package}" not in text or f"/out/{package}" not in text:
            problems.append(f"{dockerfile_path}: the binary {package} is built but not copied")
    if "--locked" not in (build.group(1) if build else ""):
        problems.append(f"{dockerfile_path}: cargo build must use --locked")
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.MULTILINE))
    copied_paths = {path for line in copied for path in line.split()}
    for package in workspace:
        directory = package["manifest_path"][len(root):].rsplit("/", 1)[0]
        if not any(directory == path or directory.startswith(path.rstrip("/") + "/") for path in copied_paths):
            problems.append(f"{dockerfile_path}: workspace member {directory} is not copied into the builder")
    image = re.search(r"^FROM rust:(\d+)\.(\d+)", text, re.MULTILINE)
    wanted = [package.get("rust_version") for package in workspace if package.get("rust_version")]
    if image and wanted:
        have = (int(image.group(1)), int(image.group(2)))
        need = max(tuple(int(part) for part in version.split(".")[:2]) for version in wanted)
        if have < need:
            problems.append(f"{dockerfile_path}: rust:{have[0]}.{have[1]} is older than rust-version {need[0]}.{need[1]}")
    return problems


def main(argv):
    if len(argv) == 3 and argv[1] == "k8s":
        docs = [doc for doc in yaml.safe_load_all(sys.stdin) if doc]
        problems = check_k8s(argv[2], docs)
    elif len(argv) == 4 and argv[1] == "dockerfile":
        problems = check_dockerfile(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

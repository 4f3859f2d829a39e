"""Static checks of docker-compose.yml and the Dockerfile, for a CI without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored by check-jsonschema); then
the two files are checked against each other and the repository: build targets are Dockerfile stages, images run as
a non-root user, COPY --from names an earlier stage, depends_on, volumes and bind mounts all resolve.
"""

import pathlib
import subprocess
import sys

import yaml
from dockerfile_parse import DockerfileParser

root = pathlib.Path(__file__).resolve().parent.parent
problems = []

schema = subprocess.run(
    ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(root / "docker-compose.yml")],
    capture_output=True,
    text=True,
)
if schema.returncode != 0:
    problems.append("docker-compose.yml does not match the Compose Specification:\n" + schema.stdout + schema.stderr)

dockerfile = DockerfileParser(path=str(root / "Dockerfile"))
stages = {}
current = None
for instruction in dockerfile.structure:
    kind, value = instruction["instruction"], instruction["value"]
    if kind == "FROM":
        words = value.split()
        current = words[2] if len(words) >= 3 and words[1].lower() == "as" else words[0]
        parent = stages.get(words[0], {"user": None})
        stages[current] = {"user": parent["user"], "entrypoint": False}
    elif kind == "USER":
        stages[current]["user"] = value.strip()
    elif kind == "ENTRYPOINT":
        stages[current]["entrypoint"] = True
    elif kind == "COPY" and "--from=" in value:
        source = value.split("--from=")[1].split()[0]
        if source not in stages:
            problems.append(f"Dockerfile: COPY --from={source} in stage {current} names no earlier stage")

compose = yaml.safe_load((root / "docker-compose.yml").read_text())
services = compose.get("services", {})
volumes = set((compose.get("volumes") or {}).keys())
for name, service in services.items():
    build = service.get("build")
    if isinstance(build, dict):
        target = build.get("target")
        stage = stages.get(target)
        if stage is None:
            problems.append(f"service {name}: build target {target!r} is not a Dockerfile stage")
        elif not stage["entrypoint"]:
            problems.append(f"service {name}: stage {target} has no ENTRYPOINT")
        elif stage["user"] in (None, "root", "0"):
            problems.append(f"service {name}: stage {target} runs as root")
    for dependency in service.get("depends_on") or {}:
        if dependency not in services:
            problems.append(f"service {name}: depends_on {dependency!r}, which is not a service")
    for mount in service.get("volumes") or []:
        source = mount.split(":")[0]
        if source.startswith("."):
            if not (root / source).exists():
                problems.append(f"service {name}: bind mount {source} does not exist in the repository")
        elif source not in volumes:
            problems.append(f"service {name}: volume {source!r} is not declared")

for problem in problems:
    print(problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"docker-compose.yml ({len(services)} services) and Dockerfile ({len(stages)} stages): consistent")

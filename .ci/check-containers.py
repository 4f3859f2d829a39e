"""Static checks of docker-compose.yml and the Dockerfile, for a CI without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored by check-jsonschema); then
the two files are checked against each other and the repository: build targets are Dockerfile stages, images run as
a non-root user, COPY --from names an earlier stage, depends_on, volumes and bind mounts all resolve. Then the
security rules: ports are published on 127.0.0.1 only, passwords are required variables (${VAR:?...}) rather than
written down, PostgreSQL trusts the emulator for the service's database and user only, and .dockerignore keeps
local settings, databases and build output out of the build context.
"""

import fnmatch
import pathlib
import re
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
        if words[0] not in stages and not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", words[0]):
            problems.append(f"Dockerfile: FROM {words[0]} is not pinned by digest (image@sha256:...)")
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

# Ports: "127.0.0.1:HOST:CONTAINER" in the short syntax, host_ip: 127.0.0.1 in the long one.
for name, service in services.items():
    for port in service.get("ports") or []:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
        if host_ip != "127.0.0.1":
            problems.append(f"service {name}: port {port!r} is not published on 127.0.0.1 only")

# Passwords: whoever runs the stack chooses them, so no well-known one ships in the file.
required_variable = re.compile(r"^\$\{\w+:\?[^}]*\}$")
for name, service in services.items():
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.split("=", 1) if "=" in entry else (entry, None) for entry in environment)
    for key, value in environment.items():
        if "PASSWORD" in key and not required_variable.match(str(value)):
            problems.append(f"service {name}: {key} must be a required variable (${{{key}:?...}}), not {value!r}")

# pg_hba.conf rules the PostgreSQL init scripts add: trust, if at all, for one database, one user, one address.
for script in sorted((root / "docker" / "postgres").glob("*.sh")):
    for rule in re.findall(r"^\s*\w.*?'1i (host\S*\s+.*?)'", script.read_text(), re.MULTILINE):
        fields = rule.split()
        if fields[-1] == "trust" and (
            fields[1:3] != ["tasksmanager", "db_iam_user"] or not fields[3].endswith("/32")
        ):
            problems.append(f"{script.relative_to(root)}: trust rule {rule!r} is wider than tasksmanager, db_iam_user, /32")


def docker_ignores(path, patterns):
    """Whether .dockerignore keeps `path` out of the context: the last matching pattern wins, ! re-includes, a
    matching directory takes its contents along, * stays within a path segment and ** spans any number of them."""

    def match(pattern_parts, path_parts):
        if not pattern_parts:
            return not path_parts
        head, rest = pattern_parts[0], pattern_parts[1:]
        if head == "**":
            return any(match(rest, path_parts[i:]) for i in range(len(path_parts) + 1))
        return bool(path_parts) and fnmatch.fnmatchcase(path_parts[0], head) and match(rest, path_parts[1:])

    parts = path.split("/")
    ignored = False
    for line in patterns:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern_parts = pattern.lstrip("!").strip("/").split("/")
        if any(match(pattern_parts, parts[:end]) for end in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


dockerignore = (root / ".dockerignore").read_text().splitlines()
for path in ["config/local.toml", "tasks.db", "data/tasks.db-wal", "target/release/tasks-api", ".env"]:
    if not docker_ignores(path, dockerignore):
        problems.append(f".dockerignore lets {path} into the build context")

for problem in problems:
    print(problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"docker-compose.yml ({len(services)} services) and Dockerfile ({len(stages)} stages): consistent")

"""Starts every service binary with exactly the environment a deployment file gives it.

    start_as_deployed.py compose|k8s ROOT BIN_DIR

For docker-compose.yml (as `docker-compose config` resolves it) or the Kubernetes
manifests (configMap and secret references resolved, secrets from secret.example.yaml),
each service gets its environment with only the addresses of Kafka, ClickHouse, its own
listener and the dispatcher rewritten to the local stack, plus a throwaway topic prefix,
database and consumer group (and replication factor 1: the local Kafka has one broker) so
the shared stack is not disturbed. Each runs as the deployment's user (Dockerfile USER,
or the pod's runAsUser/runAsGroup/fsGroup) from a read-only working directory, in its own
mount namespace where every volume mount path is an empty directory owned by that user
(secret volumes: their files, read-only), as a container would see it. A service that
exits or is not ready within the deadline fails the check; so do a deployment file that
leaves out a setting a service needs, a writable path outside a volume, and a secret
value that shows up in a service's log or /metrics.
"""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import yaml

SERVICES = [
    "click-ingest",
    "postback-ingest",
    "conversion-attribution",
    "sink",
    "postback-dispatcher",
    "reporting-api",
]
KAFKA = "127.0.0.1:9092"
CLICKHOUSE = "http://127.0.0.1:8123"
READY_SECONDS = int(os.environ.get("CHECK_DEPLOY_READY_SECONDS", "180"))
# Values `docker-compose config` needs for the variables it requires; they stand for
# the operator's secrets and must not show up in any log or /metrics.
COMPOSE_SECRETS = {
    "TRAFFSURE_CLICK_HASH_KEYS": "1:check-deploy-click-hash-secret-1",
    "TRAFFSURE_ADMIN_PASSWORD": "check-deploy-admin-password-2",
    "TRAFFSURE_SESSION_SIGNING_KEY": "check-deploy-session-signing-key-3-0123456789",
    "TRAFFSURE_API_KEYS": "check-deploy-api-key-4-0123456789",
}


def setting(env, name):
    """Whether a setting is given, directly or as a _FILE variable."""
    return bool(env.get(name)) or bool(env.get(name + "_FILE"))


def under(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


# The settings naming where a service keeps its state.
STATE_PATHS = {
    "click-ingest": ["TRAFFSURE__CLICK_LOG__PATH"],
    "conversion-attribution": ["TRAFFSURE__STATE_DIR"],
}


# What each service must be given, beyond what its defaults cover: its secrets, its
# public base URLs, and a state path on a volume.
def missing_settings(service, env, writable):
    missing = []
    need = ["TRAFFSURE__KAFKA__BROKERS", "TRAFFSURE__HTTP__BIND"]
    if service in ("click-ingest", "postback-ingest"):
        need.append("TRAFFSURE__CLICK_HASH__KEYS")
    if service in ("sink", "reporting-api", "postback-dispatcher"):
        need.append("TRAFFSURE__CLICKHOUSE__URL")
    if service == "reporting-api":
        need += [
            "TRAFFSURE__ADMIN__PASSWORD",
            "TRAFFSURE__API_KEYS",
            "TRAFFSURE__SESSION__SIGNING_KEY",
            "TRAFFSURE__TRACKING_BASE_URL",
            "TRAFFSURE__POSTBACK_BASE_URL",
            "TRAFFSURE__DISPATCHER_URL",
        ]
    missing += [f"{n} is not set" for n in need if not setting(env, n)]
    for path_setting in STATE_PATHS.get(service, []):
        path = env.get(path_setting, "")
        if not path:
            missing.append(f"{path_setting} is not set (its default is relative to the working directory)")
        elif not under(path, writable):
            missing.append(f"{path_setting}={path} is not on a writable volume ({', '.join(writable) or 'none'})")
    return missing


class Deployed:
    """One service as a deployment file runs it."""

    def __init__(self, service, env, uid, gid, groups, mounts):
        self.service = service
        self.env = env
        self.uid, self.gid, self.groups = uid, gid, groups
        # (path in the container, host directory, read-only)
        self.mounts = mounts


def dockerfile_user(root):
    text = open(os.path.join(root, "Dockerfile")).read()
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", text, re.M)
    if not users:
        sys.exit("check-deploy: the Dockerfile has no numeric USER uid:gid")
    uid, gid = map(int, users[-1])
    if uid == 0:
        sys.exit("check-deploy: the Dockerfile runs as root")
    return uid, gid


def from_compose(root, work):
    env = dict(os.environ, **COMPOSE_SECRETS)
    out = subprocess.run(
        ["docker-compose", "-f", os.path.join(root, "docker-compose.yml"), "config"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    config = yaml.safe_load(out)
    uid, gid = dockerfile_user(root)
    deployed = []
    for service in SERVICES:
        spec = config["services"].get(service)
        if spec is None:
            sys.exit(f"check-deploy: {service} is missing from docker-compose.yml")
        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        mounts = []
        for volume in spec.get("volumes") or []:
            if isinstance(volume, dict):
                target, read_only = volume["target"], volume.get("read_only", False)
            else:
                parts = volume.split(":")
                target, read_only = parts[1], parts[2:3] == ["ro"]
            mounts.append((target, new_volume(work, uid, gid), read_only))
        deployed.append(
            Deployed(service, {k: "" if v is None else str(v) for k, v in environment.items()},
                     uid, gid, [], mounts)
        )
    return deployed, set(COMPOSE_SECRETS.values())


def secret_values(secret):
    data = {k: str(v) for k, v in (secret.get("stringData") or {}).items()}
    for k, v in (secret.get("data") or {}).items():
        data[k] = base64.b64decode(v).decode()
    return data


def from_k8s(root, work):
    k8s = os.path.join(root, "deploy", "k8s")
    kustomization = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
    files = list(kustomization["resources"]) + ["secret.example.yaml"]
    docs = [d for f in files for d in yaml.safe_load_all(open(os.path.join(k8s, f))) if d]
    config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: secret_values(d) for d in docs if d["kind"] == "Secret"}
    # Key ids and user names are not secret (and too short to look for).
    secret_texts = {v for s in secrets.values() for v in s.values() if len(v) >= 16}
    workloads = {
        d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
    }
    deployed = []
    for service in SERVICES:
        workload = workloads.get(service)
        if workload is None:
            sys.exit(f"check-deploy: deploy/k8s has no Deployment or StatefulSet {service}")
        pod = workload["spec"]["template"]["spec"]
        pod_name = workload["metadata"]["name"] + ("-0" if workload["kind"] == "StatefulSet" else "-5d4f8b7c9-x2x7q")
        context = pod.get("securityContext") or {}
        (container,) = pod["containers"]
        context = dict(context, **(container.get("securityContext") or {}))
        uid, gid = context.get("runAsUser"), context.get("runAsGroup")
        if not uid or gid is None or not context.get("runAsNonRoot"):
            sys.exit(f"check-deploy: {service} does not set runAsNonRoot, runAsUser and runAsGroup")
        groups = [context["fsGroup"]] if "fsGroup" in context else []
        env = {}
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(config_maps[source["configMapRef"]["name"]])
            if "secretRef" in source:
                env.update(secrets[source["secretRef"]["name"]])
        # `env` wins over `envFrom`, as in Kubernetes.
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref = var["valueFrom"]
            if "configMapKeyRef" in ref:
                env[var["name"]] = config_maps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                env[var["name"]] = secrets[ref["secretKeyRef"]["name"]][ref["secretKeyRef"]["key"]]
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = pod_name
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                env[var["name"]] = workload["metadata"].get("namespace", "default")
            else:
                sys.exit(f"check-deploy: {service}: cannot resolve {var['name']}")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for template in workload["spec"].get("volumeClaimTemplates") or []:
            volumes[template["metadata"]["name"]] = {"name": template["metadata"]["name"], "persistentVolumeClaim": {}}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            read_only = mount.get("readOnly", False)
            if "secret" in volume:
                files = secrets[volume["secret"]["secretName"]]
                mounts.append((mount["mountPath"], secret_volume(work, files, groups[0] if groups else gid), True))
            elif "emptyDir" in volume or "persistentVolumeClaim" in volume:
                # fsGroup owns a new volume, writable by the group, as the kubelet sets it.
                mounts.append((mount["mountPath"], new_volume(work, 0 if groups else uid, groups[0] if groups else gid), read_only))
            else:
                sys.exit(f"check-deploy: {service}: volume {mount['name']} has a type this check does not know")
        deployed.append(Deployed(service, env, uid, gid, groups, mounts))
    return deployed, secret_texts


def new_volume(work, uid, gid):
    path = tempfile.mkdtemp(prefix="volume-", dir=work)
    os.chown(path, uid, gid)
    os.chmod(path, 0o2775 if uid == 0 else 0o755)
    return path


def secret_volume(work, files, gid):
    path = tempfile.mkdtemp(prefix="secret-", dir=work)
    for name, value in files.items():
        file = os.path.join(path, name)
        with open(file, "w") as f:
            f.write(value)
        os.chown(file, 0, gid)
        os.chmod(file, 0o440)
    os.chmod(path, 0o755)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite(units, run_id):
    """Points every service at the local stack, on its own port, in a throwaway namespace."""
    ports = {u.service: free_port() for u in units}
    for u in units:
        env = u.env
        env["TRAFFSURE__HTTP__BIND"] = f"127.0.0.1:{ports[u.service]}"
        if "TRAFFSURE__KAFKA__BROKERS" in env:
            env["TRAFFSURE__KAFKA__BROKERS"] = KAFKA
        if "TRAFFSURE__CLICKHOUSE__URL" in env:
            env["TRAFFSURE__CLICKHOUSE__URL"] = CLICKHOUSE
        if env.get("TRAFFSURE__DISPATCHER_URL"):
            env["TRAFFSURE__DISPATCHER_URL"] = f"http://127.0.0.1:{ports['postback-dispatcher']}"
        if env.get("TRAFFSURE__TELEMETRY__OTLP_ENDPOINT"):
            # Nothing listens there: the exporter drops spans, as with a collector down.
            env["TRAFFSURE__TELEMETRY__OTLP_ENDPOINT"] = "http://127.0.0.1:9"
        env["TRAFFSURE__KAFKA__TOPIC_PREFIX"] = f"check-{run_id}."
        env["TRAFFSURE__KAFKA__REPLICATION_FACTOR"] = "1"
        env["TRAFFSURE__CLICKHOUSE__DATABASE"] = f"check_{run_id}"
        if u.service in ("sink", "conversion-attribution", "postback-dispatcher"):
            env["TRAFFSURE__GROUP_ID"] = f"check-{run_id}-{u.service}"
    return ports


def setpriv_args(unit):
    """Runs what follows as the deployment's user and groups, unable to gain privileges."""
    args = ["/usr/bin/setpriv", f"--reuid={unit.uid}", f"--regid={unit.gid}"]
    args += [f"--groups={','.join(map(str, unit.groups))}"] if unit.groups else ["--clear-groups"]
    return args + ["--no-new-privs", "--"]


def start(unit, binary, cwd, log):
    script = ["set -e"]
    for target, host, read_only in unit.mounts:
        # The mount point itself is created on the host once (empty); what the service sees
        # there is the fresh volume, visible only in its own mount namespace.
        os.makedirs(target, exist_ok=True)
        script.append(f"mount --bind '{host}' '{target}'")
        if read_only:
            script.append(f"mount -o remount,bind,ro '{target}'")
    setpriv = setpriv_args(unit) + [binary]
    script.append("exec " + " ".join(f"'{a}'" for a in setpriv))
    env = dict(unit.env)
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return subprocess.Popen(
        ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "\n".join(script)],
        env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode(errors="replace")


def clickhouse(sql):
    request = urllib.request.Request(CLICKHOUSE, data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def image_files(root, cwd):
    """The files the Dockerfile puts under the image's working directory /app besides the
    binary (uap-core's regexes), taken from the same paths of the local install."""
    with open(os.path.join(root, "Dockerfile")) as dockerfile:
        copies = re.findall(r"^COPY --from=\S+ \S+ /app/(\S+)$", dockerfile.read(), re.M)
    for rel in copies:
        source = os.path.join(root, rel)
        if not os.path.isfile(source):
            sys.exit(f"check-deploy: the image carries /app/{rel}, but {source} is missing: run make install")
        target = os.path.join(cwd, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o444)
        directory = os.path.dirname(target)
        while directory != cwd:
            os.chmod(directory, 0o555)
            directory = os.path.dirname(directory)


def main():
    which, root, bin_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    if os.geteuid() != 0:
        sys.exit("check-deploy: starting the services as their deployed user needs root (or sudo)")
    run_id = uuid.uuid4().hex[:10]
    work = tempfile.mkdtemp(prefix=f"traffsure-check-{which}-")
    os.chmod(work, 0o755)
    units, secrets = (from_compose if which == "compose" else from_k8s)(root, work)
    failures = []
    for u in units:
        writable = [t for t, _, ro in u.mounts if not ro]
        failures += [f"{which} {u.service}: {m}" for m in missing_settings(u.service, u.env, writable)]
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    ports = rewrite(units, run_id)
    # The image's working directory: nothing may be written there.
    cwd = tempfile.mkdtemp(prefix="app-", dir=work)
    image_files(root, cwd)
    os.chmod(cwd, 0o555)
    procs, logs = {}, {}
    started = time.monotonic()
    try:
        for u in units:
            binary = os.path.join(bin_dir, u.service)
            if not os.access(binary, os.X_OK):
                sys.exit(f"check-deploy: {binary} is missing: build the services first")
            logs[u.service] = os.path.join(work, f"{u.service}.log")
            with open(logs[u.service], "w") as log:
                procs[u.service] = start(u, binary, cwd, log)
        waiting = set(procs)
        ready_after = {}
        while waiting and time.monotonic() - started < READY_SECONDS:
            for service in sorted(waiting):
                if procs[service].poll() is not None:
                    with open(logs[service], errors="replace") as log:
                        tail = "".join(log.readlines()[-5:]).rstrip()
                    failures.append(
                        f"{which} {service}: exited with {procs[service].returncode}:\n{tail}"
                    )
                    waiting.discard(service)
                    continue
                try:
                    if get(f"http://127.0.0.1:{ports[service]}/readyz")[0] == 200:
                        ready_after[service] = time.monotonic() - started
                        waiting.discard(service)
                except OSError:
                    pass
            time.sleep(0.5)
        failures += [f"{which} {s}: not ready after {READY_SECONDS} s" for s in sorted(waiting)]
        for u in units:
            if u.service not in ready_after:
                continue
            status = open(f"/proc/{procs[u.service].pid}/status").read()
            uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
            if not uid or int(uid.group(1)) != u.uid:
                failures.append(f"{which} {u.service}: does not run as uid {u.uid}")
            _, metrics = get(f"http://127.0.0.1:{ports[u.service]}/metrics")
            log = open(logs[u.service], errors="replace").read()
            for secret in secrets:
                if secret in metrics:
                    failures.append(f"{which} {u.service}: a secret appears in /metrics")
                if secret in log:
                    failures.append(f"{which} {u.service}: a secret appears in its log")
            # conversion-attribution writes its state with the first click of a partition:
            # create each state path now, as the service's user in its mount namespace.
            for path_setting in STATE_PATHS.get(u.service, []):
                path = u.env[path_setting]
                probe = subprocess.run(
                    ["/usr/bin/nsenter", "-t", str(procs[u.service].pid), "-m", "--",
                     *setpriv_args(u), "/bin/sh", "-c", 'mkdir -p "$1" && test -w "$1"', "sh", path],
                    capture_output=True, text=True,
                )
                if probe.returncode != 0:
                    failures.append(
                        f"{which} {u.service}: {path_setting}={path} is not writable by its user: {probe.stderr.strip()}"
                    )
        for service, proc in sorted(procs.items()):
            if service in ready_after and proc.poll() is not None:
                failures.append(f"{which} {service}: exited with {proc.returncode} after it was ready")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    for failure in failures:
        service = failure.split()[1]
        print(f"check-deploy: FAIL {failure}", file=sys.stderr)
        if service in logs:
            tail = open(logs[service], errors="replace").read().splitlines()[-25:]
            print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    try:
        clickhouse(f"DROP DATABASE IF EXISTS check_{run_id}")
    except OSError as e:
        print(f"check-deploy: could not drop database check_{run_id}: {e}", file=sys.stderr)
    if os.environ.get("CHECK_DEPLOY_KEEP"):
        print(f"check-deploy: logs and volumes kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        sys.exit(1)
    summary = ", ".join(f"{s} {t:.0f} s" for s, t in sorted(ready_after.items(), key=lambda x: x[1]))
    print(f"check-deploy: {which}: all {len(units)} services ready as their deployed user ({summary})")


if __name__ == "__main__":
    main()
